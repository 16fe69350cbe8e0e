"""bench.run_all --from-results: the summary of bench/results/ and the latest figures file
(docs/performance-results.md), written whole and rewritten whole, never into performance.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import bench.common
import bench.run_all as run_all


def figure(name: str, value: float, unit: str, target: str | None, met: bool | None) -> Any:
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "low": value * 0.9,
        "high": value * 1.1,
        "samples": [value * 0.9, value, value * 1.1],
        "baseline": None,
        "baseline_name": None,
        "ratio": None,
        "ratio_low": None,
        "ratio_high": None,
        "target": {"text": target} if target else None,
        "met": met,
    }


def result(name: str, value: float) -> dict[str, Any]:
    server = {
        "kind": "embedded",
        "version": "18.6",
        "settings": {"fsync": "on", "synchronous_commit": "on", "shared_buffers": "128MB"},
        "jit_available": False,
    }
    return {
        "benchmark": name,
        "title": f"the {name} benchmark",
        "params": {"rounds": 3},
        "notes": [f"a note of {name}"],
        "figures": [
            figure(f"{name} figure", value, "ms", "≤ 10.0 ms", value <= 10),
            figure(f"{name} context", value * 2, "s", None, None),
        ],
        "meta": {
            "date": "2026-12-06T10:00:00+00:00",
            "git": {"commit": "0123456789ab", "dirty": False},
            "server": server,
            "cores": 2,
            "packages": {"pgqueuer": "1.6.0", "psycopg": "3.3"},
            "python": "3.11",
            "seconds": 60.0,
        },
    }


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A results folder holding one result per benchmark, and a docs folder with a hand-written
    performance.md; the real bench/results/ and docs/ are left alone."""
    results, docs = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    docs.mkdir()
    for i, name in enumerate(run_all.BENCHMARKS):
        (results / f"{name}.json").write_text(json.dumps(result(name, 5.0 + 3 * i)))
    (docs / "performance.md").write_text("# Performance\n\nhand-written\n")
    monkeypatch.setattr(bench.common, "RESULTS", results)
    monkeypatch.setattr(run_all, "RESULTS", results)
    monkeypatch.setattr(run_all, "DOCS", docs)
    monkeypatch.delenv("BENCH_EXTRA_SQL", raising=False)
    monkeypatch.delenv("BENCH_DAEMON", raising=False)
    return results, docs


def test_from_results_writes_the_latest_figures_file_whole(folders: tuple[Path, Path]) -> None:
    results, docs = folders
    assert run_all.main(["--from-results"]) == 0

    figures = (docs / run_all.FIGURES).read_text()
    assert figures.startswith(run_all.HEADER)
    assert "commit `0123456789ab`" in figures
    targets = figures.split("## Targets", 1)[1].split("## Every figure", 1)[0]
    for name in run_all.BENCHMARKS:
        assert f"| {name} | {name} figure |" in targets  # a figure with a target
        assert f"{name} context" not in targets  # one without stays out of the targets
        assert f"**{name}** — the {name} benchmark" in figures
    assert figures.strip().endswith(f"- a note of {run_all.BENCHMARKS[-1]}")
    assert (results / "summary.md").read_text().strip() in figures
    assert (docs / "performance.md").read_text() == "# Performance\n\nhand-written\n"

    # A second run replaces the file rather than adding to it.
    (results / "drain.json").write_text(json.dumps(result("drain", 42.0)))
    assert run_all.main(["--from-results"]) == 0
    again = (docs / run_all.FIGURES).read_text()
    assert again.count("# Latest benchmark figures") == 1
    assert "42.0 ms" in again and again.count("**drain**") == 1


@pytest.mark.parametrize("args", [["--only", "drain"], ["--quick"], ["--no-docs"]])
def test_partial_runs_leave_docs_alone(folders: tuple[Path, Path], args: list[str]) -> None:
    results, docs = folders
    for path in list(results.iterdir()):
        path.with_name(path.stem + ".quick.json").write_text(path.read_text())
    assert run_all.main(["--from-results", *args]) == 0
    assert not (docs / run_all.FIGURES).exists()


def test_a_missing_result_is_reported_and_fails_the_run(folders: tuple[Path, Path]) -> None:
    results, docs = folders
    (results / "burst.json").unlink()
    assert run_all.main(["--from-results"]) == 1
    assert "**Failed to run:** burst." in (docs / run_all.FIGURES).read_text()


def test_no_results_at_all_leave_the_figures_file_alone(folders: tuple[Path, Path]) -> None:
    results, docs = folders
    (docs / run_all.FIGURES).write_text("the last full run's figures\n")
    for path in results.iterdir():
        path.unlink()
    assert run_all.main(["--from-results"]) == 1
    assert (docs / run_all.FIGURES).read_text() == "the last full run's figures\n"
