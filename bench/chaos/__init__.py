"""The chaos run (`python -m bench.chaos`): writers, daemons and faults at once, then proof that
every UE ends consistent and no job was lost. See docs/reliability.md.

Modules: server (our PostgreSQL, listening on loopback TCP), proxy (the cuttable TCP proxy),
catalogue (the UEs, hot ones, the poison one), writer (a writer process), processes (starting
and stopping daemons and writers), faults (what is injected), checks (the assertions and the
lag), run (the whole)."""
