"""The chaos run (`python -m bench.chaos`): writers, daemons and faults at once, then proof that
every UE ends consistent and no job was lost. See docs/reliability.md.

Modules: server (our PostgreSQL, listening on loopback TCP), proxy (the cuttable TCP proxy),
catalogue (the UEs, hot ones, the poison one), writer (a writer process) and operations (the
element statements it picks from), processes (starting and stopping daemons and writers), faults
(what is injected), checks (the queries behind the assertions, and the lag), run (set-up and the
chaos), drains (the end of the chaos: the drains around the operator's sweep), verdict (the
assertions and the report)."""
