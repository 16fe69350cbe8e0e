"""Lateness of delayed jobs: resyncs requested due in 1–5 s (`resync.request(unit, reason,
delay)`, one UE each, requested at random moments), run by a daemon with its defaults; lateness
is resync.job_runs.started_at − the job's execute_after, both on the server's clock.

No baseline is set by the issue; for reference the same schedule is run, alternately, by
pgqueuer's stock QueueManager with a no-op entrypoint (handler start − execute_after)."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench import common, pgq_noop
from bench.common import Bench, Target
from support import processes
from support.catalogue import load_catalogue

NAME = "lateness"
TITLE = "lateness of delayed jobs (due in 1–5 s): run started − execute_after"
TABLES = ("resync.pgqueuer", "resync.pgqueuer_log", "resync.job_runs")


def measure(b: Bench) -> None:
    jobs = 15 if b.quick else 100
    delays = (1.0, 2.0) if b.quick else (1.0, 5.0)
    spread = 1.0 if b.quick else 6.0  # seconds over which the requests are made
    units = jobs + 1
    b.params.update(
        jobs_per_round=jobs,
        delay_s=list(delays),
        requested_over_s=spread,
        daemon="subprocess, defaults",
    )
    with b.connect() as conn:
        load_catalogue(conn, units)
    rng = random.Random(7)

    def prepare() -> None:
        with b.connect() as conn:
            common.reset_queue(conn)
            common.settle(conn, *TABLES)

    def schedule(enqueue: Any) -> dict[int, float]:
        """Request the jobs at random moments; {job id: execute_after, epoch seconds}."""
        due: dict[int, float] = {}
        with b.connect() as conn:
            for unit in range(1, jobs + 1):
                job, at = enqueue(conn, unit, rng.uniform(*delays))
                due[job] = at
                time.sleep(rng.uniform(0, 2 * spread / jobs))
        return due

    def ours(_: int) -> list[float]:
        prepare()
        proc = b.start_daemon()
        try:
            b.daemon_ready(proc, units)

            def enqueue(conn: Any, unit: int, delay: float) -> tuple[int, float]:
                # resync.request queues at now() + delay: the same now() as read here.
                row = conn.execute(
                    "SELECT resync.request(%(u)s, 'bench_lateness', make_interval(secs => %(d)s)),"
                    " extract(epoch FROM now() + make_interval(secs => %(d)s))::float8",
                    {"u": unit, "d": delay},
                ).fetchone()
                return int(row[0]), float(row[1])

            due = schedule(enqueue)
            with b.connect() as conn:

                def started() -> list[tuple[int, float]]:
                    processes.check_alive(proc)
                    rows = conn.execute(
                        "SELECT job_id, extract(epoch FROM started_at)::float8 "
                        "FROM resync.job_runs WHERE outcome = 'succeeded' AND job_id = ANY(%s)",
                        (list(due),),
                    ).fetchall()
                    return rows if len(rows) >= len(due) else []

                rows = common.wait_for(started, delays[1] + 30, "every delayed job to run", 0.1)
        finally:
            processes.stop(proc)
        return [(s - due[j]) * 1000 for j, s in rows]

    def noop(_: int) -> list[float]:
        prepare()

        def enqueue(conn: Any, _: int, delay: float) -> tuple[int, float]:
            job = pgq_noop.enqueue(conn, delay)
            at = conn.execute(
                "SELECT extract(epoch FROM execute_after)::float8 FROM resync.pgqueuer "
                "WHERE id = %s",
                (job,),
            ).fetchone()[0]
            return job, float(at)

        return pgq_noop.timed_jobs(
            b.dsn, b.workdir, b.connect, lambda: schedule(enqueue), delays[1] + 30, 0.1
        )

    runs = b.alternate({"ue-resync": ours, "pgqueuer": noop})
    name = "pgqueuer no-op, handler start − execute_after"
    b.percentile("lateness p50", "ms", 0.5, runs["ue-resync"], runs["pgqueuer"], name)
    b.percentile(
        "lateness p99",
        "ms",
        0.99,
        runs["ue-resync"],
        runs["pgqueuer"],
        name,
        Target("<=", 50.0, on="value"),
    )
    b.percentile("lateness max", "ms", 1.0, runs["ue-resync"], runs["pgqueuer"], name)
    for q in (0.5, 0.99):
        b.percentile(f"baseline: pgqueuer lateness p{q * 100:g}", "ms", q, runs["pgqueuer"])
    b.extra["samples_ms"] = {
        "ue_resync": [round(x, 3) for r in runs["ue-resync"] for x in r],
        "pgqueuer": [round(x, 3) for r in runs["pgqueuer"] for x in r],
    }


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(NAME, TITLE, measure, argv, __doc__, full_rounds=3, quick_rounds=1)


if __name__ == "__main__":
    sys.exit(main())
