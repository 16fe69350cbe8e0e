"""The chaos run (`python -m bench.chaos`): writers, daemons and faults at once, then proof that
every UE ends consistent and no job was lost. See docs/reliability.md.

Modules, each taking what it needs (a reporter, a connect callable, plain data), none of them the
run: dataset (what the database starts with: the UEs, hot ones, the poison one), proxy (the
cuttable TCP proxy), writer (a writer process, and the run's side of it: its slot, its records)
and operations (the element statements it picks from), faults (what is injected), failover (the
primary and its synchronous replica, with --failover), monitor (what the run says and watches
while the chaos lasts), checks (the queries behind the assertions, and the lag), drains (the end
of the chaos: the drains around the operator's sweep), verdict (the assertions), report (the
figures, as JSON and printed), run (set-up and the chaos, and the order of it all). The daemons
and writers run in support.processes slots; the single server is a support.postgres.Database."""
