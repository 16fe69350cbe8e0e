"""Lateness of delayed jobs: resyncs requested due in 1–5 s (`resync.request(unit, reason,
delay)`, one UE each, requested at random moments), run by a daemon with its defaults; lateness
is resync.job_runs.started_at − the job's execute_after, both on the server's clock.

No baseline is set by the issue; for reference the same schedule is run, alternately, by
pgqueuer's stock QueueManager with a no-op entrypoint (handler start − execute_after)."""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Callable, Sequence

import psycopg

from bench import common, pgq_noop
from bench.common import Bench, Target
from support import processes
from support.catalogue import load_catalogue

NAME = "lateness"
TITLE = "lateness of delayed jobs (due in 1–5 s): run started − execute_after"
TABLES = ("resync.pgqueuer", "resync.pgqueuer_log", "resync.job_runs")


# Queues one job of a UE due `delay` seconds from now; (job id, its execute_after in epoch s).
Enqueue = Callable[[psycopg.Connection, int, float], tuple[int, float]]


@dataclasses.dataclass
class Schedule:
    """When the jobs are requested and how far ahead they are due: `jobs` requests, one UE each,
    due in `delays` seconds (uniform), at random moments over about `spread` seconds."""

    jobs: int
    delays: tuple[float, float]
    spread: float
    rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(7))

    def run(self, b: Bench, enqueue: Enqueue) -> dict[int, float]:
        """Request the jobs; {job id: execute_after, epoch seconds}."""
        due: dict[int, float] = {}
        with b.connect() as conn:
            for unit in range(1, self.jobs + 1):
                job, at = enqueue(conn, unit, self.rng.uniform(*self.delays))
                due[job] = at
                time.sleep(self.rng.uniform(0, 2 * self.spread / self.jobs))
        return due


def measure(b: Bench) -> None:
    jobs = 15 if b.quick else 100
    plan = Schedule(jobs, (1.0, 2.0) if b.quick else (1.0, 5.0), 1.0 if b.quick else 6.0)
    b.params.update(
        jobs_per_round=jobs,
        delay_s=list(plan.delays),
        requested_over_s=plan.spread,
        daemon="subprocess, defaults",
    )
    with b.connect() as conn:
        load_catalogue(conn, jobs + 1)  # the last UE is the warm-up's
    runs = b.alternate(
        {"ue-resync": lambda _: ours(b, plan), "pgqueuer": lambda _: pgqueuer_noop(b, plan)}
    )
    report(b, runs["ue-resync"], runs["pgqueuer"])


def ours(b: Bench, plan: Schedule) -> list[float]:
    """One round of ue-resync's daemon: the lateness of each job, ms."""
    b.fresh_queue(*TABLES)
    proc = b.start_daemon()
    try:
        b.daemon_ready(proc, plan.jobs + 1)

        def enqueue(conn: psycopg.Connection, unit: int, delay: float) -> tuple[int, float]:
            # resync.request queues at now() + delay: the same now() as read here.
            row = conn.execute(
                "SELECT resync.request(%(u)s, 'bench_lateness', make_interval(secs => %(d)s)),"
                " extract(epoch FROM now() + make_interval(secs => %(d)s))::float8",
                {"u": unit, "d": delay},
            ).fetchone()
            return int(row[0]), float(row[1])

        due = plan.run(b, enqueue)
        with b.connect() as conn:

            def started() -> list[tuple[int, float]]:
                processes.check_alive(proc)
                rows = conn.execute(
                    "SELECT job_id, extract(epoch FROM started_at)::float8 "
                    "FROM resync.job_runs WHERE outcome = 'succeeded' AND job_id = ANY(%s)",
                    (list(due),),
                ).fetchall()
                return rows if len(rows) >= len(due) else []

            rows = common.wait_for(started, plan.delays[1] + 30, "every delayed job to run", 0.1)
    finally:
        processes.stop(proc)
    return [(s - due[j]) * 1000 for j, s in rows]


def pgqueuer_noop(b: Bench, plan: Schedule) -> list[float]:
    """One round of pgqueuer's stock worker with a no-op entrypoint: the lateness of each job
    (handler start − execute_after), ms."""
    b.fresh_queue(*TABLES)

    def enqueue(conn: psycopg.Connection, _: int, delay: float) -> tuple[int, float]:
        job = pgq_noop.enqueue(conn, delay)
        at = conn.execute(
            "SELECT extract(epoch FROM execute_after)::float8 FROM resync.pgqueuer WHERE id = %s",
            (job,),
        ).fetchone()[0]
        return job, float(at)

    return pgq_noop.timed_jobs(
        b.dsn, b.workdir, b.connect, lambda: plan.run(b, enqueue), plan.delays[1] + 30, 0.1
    )


def report(b: Bench, resyncs: list[list[float]], noop: list[list[float]]) -> None:
    """The percentiles of both, rounds pooled, and every sample in the results."""
    name = "pgqueuer no-op, handler start − execute_after"
    b.percentile("lateness p50", "ms", 0.5, resyncs, noop, name)
    b.percentile("lateness p99", "ms", 0.99, resyncs, noop, name, Target("<=", 50.0, on="value"))
    b.percentile("lateness max", "ms", 1.0, resyncs, noop, name)
    for q in (0.5, 0.99):
        b.percentile(f"baseline: pgqueuer lateness p{q * 100:g}", "ms", q, noop)
    b.extra["samples_ms"] = {
        "ue_resync": [round(x, 3) for r in resyncs for x in r],
        "pgqueuer": [round(x, 3) for r in noop for x in r],
    }


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(NAME, TITLE, measure, argv, __doc__, full_rounds=3, quick_rounds=1)


if __name__ == "__main__":
    sys.exit(main())
