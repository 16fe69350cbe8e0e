"""Drain: one daemon resyncs 20,000 queued jobs (distinct UEs), against pgqueuer's own
QueueManager draining 20,000 no-op jobs on the same driver (psycopg) and the same table.

Three variants, alternated round by round, each a process of its own on an emptied, vacuumed
queue: `ue-resync work --stop-when-empty` with its defaults (batches of 200, two resync
transactions at once); bench/pgq_noop.py --drain with QueueManager.run()'s defaults (batch 10:
the baseline the target is held against, the issue's "no-op drain"); and the same no-op with
batches of 50 (a stricter reference). Throughput is read from pgqueuer's own log for all three:
jobs over the time from the first pick to the last 'successful' row, so process start-up and
shut-down are left out alike."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import psycopg

from bench import common, pgq_noop
from bench.common import Bench, Target
from support import processes
from support.catalogue import load_catalogue

NAME = "drain"
TITLE = "drain of queued resync jobs by one daemon vs a pgqueuer no-op drain"

TABLES = ("resync.pgqueuer", "resync.pgqueuer_log", "resync.job_runs", "public.course_units")


def throughput(conn: psycopg.Connection, entrypoint: str, jobs: int) -> tuple[float, float]:
    """(jobs per second, seconds) from pgqueuer_log: first pick to last success."""
    row = conn.execute(
        """
        SELECT count(*) FILTER (WHERE status = 'successful'),
               extract(epoch FROM max(created) FILTER (WHERE status = 'successful')
                                - min(created) FILTER (WHERE status = 'picked'))
        FROM resync.pgqueuer_log WHERE entrypoint = %s
        """,
        (entrypoint,),
    ).fetchone()
    assert row is not None
    done, seconds = int(row[0]), float(row[1] or 0)
    if done != jobs:
        raise RuntimeError(f"{entrypoint}: {done} of {jobs} jobs logged successful")
    return jobs / seconds if seconds > 0 else float("nan"), seconds


def measure(b: Bench) -> None:
    jobs = 2_000 if b.quick else 20_000
    b.params.update(
        jobs=jobs,
        elements_per_unit=4,
        daemon="subprocess, defaults (batch 200, concurrency 2)",
        baseline="bench/pgq_noop.py --drain: QueueManager.run() defaults (batch 10)",
    )
    with b.connect() as conn:
        load_catalogue(conn, jobs)
    walls: dict[str, list[float]] = {"ue-resync": [], "no-op": [], "no-op batch 50": []}
    runs = b.alternate(
        {
            "ue-resync": lambda _: ours(b, jobs, walls["ue-resync"]),
            "no-op": lambda _: noop(b, jobs, (), walls["no-op"]),
            "no-op batch 50": lambda _: noop(
                b, jobs, ("--batch-size", "50"), walls["no-op batch 50"]
            ),
        }
    )
    report(b, runs, walls)


def ours(b: Bench, jobs: int, walls: list[float]) -> float:
    """One round: `jobs` resyncs queued, then drained by `ue-resync work --stop-when-empty`; its
    jobs/s (its wall time, process start to exit, added to `walls`)."""
    b.fresh_queue(*TABLES)
    with b.connect() as conn:
        conn.execute(
            "SELECT count(*) FROM resync.enqueue("
            "array(SELECT g::bigint FROM generate_series(1, %(n)s) g), "
            "array_fill('bench_drain'::text, ARRAY[%(n)s]), interval '0')",
            {"n": jobs},
        )
        started = time.monotonic()
        processes.wait_exit(b.start_daemon("--stop-when-empty"), 600)
        walls.append(time.monotonic() - started)
        ok = conn.execute(
            "SELECT count(*) FROM resync.job_runs WHERE outcome = 'succeeded'"
        ).fetchone()[0]
        if ok != jobs:
            raise RuntimeError(f"{ok} of {jobs} resyncs succeeded")
        return throughput(conn, "resync_course_unit", jobs)[0]


def noop(b: Bench, jobs: int, args: tuple[str, ...], walls: list[float]) -> float:
    """One round: `jobs` no-op jobs queued, then drained by bench/pgq_noop.py --drain ARGS; its
    jobs/s (its wall time added to `walls`)."""
    b.fresh_queue(*TABLES)
    with b.connect() as conn:
        conn.execute(
            "INSERT INTO resync.pgqueuer (priority, entrypoint, status, payload, headers) "
            "SELECT 0, %s, 'queued', convert_to(json_build_object('n', g)::text, 'UTF8'), "
            "jsonb_build_object('n', g::text) FROM generate_series(1, %s) g",
            (pgq_noop.ENTRYPOINT, jobs),
        )
        started = time.monotonic()
        processes.wait_exit(pgq_noop.start(b.dsn, b.workdir, "--drain", *args), 600)
        walls.append(time.monotonic() - started)
        return throughput(conn, pgq_noop.ENTRYPOINT, jobs)[0]


def report(b: Bench, runs: dict[str, list[float]], walls: dict[str, list[float]]) -> None:
    b.paired(
        "ue-resync drain",
        "jobs/s",
        runs["ue-resync"],
        runs["no-op"],
        "pgqueuer no-op, run() defaults",
        Target(">=", 1.0),
    )
    b.paired(
        "ue-resync drain vs no-op at batch 50",
        "jobs/s",
        runs["ue-resync"],
        runs["no-op batch 50"],
        "pgqueuer no-op, batch 50",
    )
    b.paired("pgqueuer no-op drain, run() defaults (batch 10)", "jobs/s", runs["no-op"])
    b.paired("pgqueuer no-op drain, batch 50", "jobs/s", runs["no-op batch 50"])
    for key, label in (
        ("ue-resync", "ue-resync"),
        ("no-op", "no-op, defaults"),
        ("no-op batch 50", "no-op, batch 50"),
    ):
        b.paired(f"{label}: process start to exit", "s", walls[key])


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(NAME, TITLE, measure, argv, __doc__, full_rounds=3, quick_rounds=1)


if __name__ == "__main__":
    sys.exit(main())
