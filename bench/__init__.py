"""Benchmarks of ue-resync: every figure a ratio against a baseline measured in the same run.

`python -m bench.<name> [--quick]` runs one, `python -m bench.run_all [--quick]` all of them;
bench/README.md says what each measures."""
