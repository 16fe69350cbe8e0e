"""The baseline worker: pgqueuer's own QueueManager with the stock PsycopgDriver (one connection,
LISTEN on it too) and a no-op entrypoint `bench_noop`, on ue-resync's queue table. It runs as a
process of its own, like the daemon it is held against:

    python -m bench.pgq_noop --dsn DSN [--drain] [--marks FILE] [--batch-size N] [--sleep S]

Without options it runs QueueManager.run()'s own defaults (batch 10, 30 s poll and heartbeat).

--marks writes {job id: time.time() when its handler started} at exit (the host's clock, which is
the server's when the server is local).

The benchmarks drive it with `start` (support.processes), `ready`, `enqueue` (pgqueuer's own
enqueue query) and `read_marks`, or all at once with `timed_jobs`."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
from pgqueuer.adapters.drivers.psycopg import PsycopgDriver, SyncPsycopgDriver
from pgqueuer.adapters.persistence import qb
from pgqueuer.adapters.persistence.queries import Queries, SyncQueries
from pgqueuer.core.qm import QueueManager
from pgqueuer.domain import models, types
from pgqueuer.domain.settings import DBSettings

from support import processes
from support.poll import wait_for

ENTRYPOINT = "bench_noop"
SETTINGS = DBSettings(db_schema="resync", channel=types.Channel("ue_resync"))
# The daemon's own run() parameters (its defaults: batch 50, --sleep 3, heartbeat timeout 8 s),
# for a baseline that differs from the daemon by the handler only.
AS_DAEMON = ("--batch-size", "50", "--sleep", "3", "--heartbeat-timeout", "8")


async def work(args: argparse.Namespace) -> None:
    conn = await psycopg.AsyncConnection.connect(
        args.dsn, autocommit=True, application_name="bench pgq_noop"
    )
    queries = Queries(
        PsycopgDriver(conn),
        qbe=qb.QueryBuilderEnvironment(settings=SETTINGS),
        qbq=qb.QueryQueueBuilder(settings=SETTINGS),
        qbs=qb.QuerySchedulerBuilder(settings=SETTINGS),
    )
    qm = QueueManager(queries, channel=SETTINGS.channel)
    marks: dict[int, float] = {}

    @qm.entrypoint(ENTRYPOINT, accepts_context=False)
    async def noop(job: models.Job) -> None:
        marks[job.id] = time.time()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, qm.shutdown.set)
    mode = types.QueueExecutionMode
    try:
        await qm.run(
            dequeue_timeout=timedelta(seconds=args.sleep),
            batch_size=args.batch_size,
            mode=mode.drain if args.drain else mode.continuous,
            heartbeat_timeout=timedelta(seconds=args.heartbeat_timeout),
            log_aggregation_interval=timedelta(seconds=30),
        )
    finally:
        await conn.close()
        if args.marks:
            Path(args.marks).write_text(json.dumps({str(k): v for k, v in marks.items()}))


# -- the benchmark's side --


def start(dsn: str, workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    """`python -m bench.pgq_noop --dsn DSN ARGS` in `workdir`: pgqueuer's run() defaults unless
    ARGS say otherwise."""
    return processes.spawn(
        dsn,
        "--dsn",
        dsn,
        *args,
        cwd=workdir,
        log=workdir / f"noop-{time.monotonic_ns()}.log",
        command=(sys.executable, "-m", "bench.pgq_noop"),
    )


def enqueue(conn: psycopg.Connection, delay: float = 0.0) -> int:
    """One no-op job through pgqueuer's own enqueue (the SQL its Queries.enqueue runs)."""
    queries = SyncQueries(SyncPsycopgDriver(conn), qbq=qb.QueryQueueBuilder(settings=SETTINGS))
    return int(queries.enqueue(ENTRYPOINT, b"{}", execute_after=timedelta(seconds=delay))[0])


def ready(
    connect: Callable[[], psycopg.Connection], proc: subprocess.Popen[bytes], timeout: float = 30
) -> None:
    """Wait until the worker `proc` has run one warm-up job."""
    with connect() as conn:
        job = enqueue(conn)

        def done() -> bool:
            processes.check_alive(proc)
            return not conn.execute(
                "SELECT count(*) FROM resync.pgqueuer WHERE id = %s", (job,)
            ).fetchone()[0]

        wait_for(done, timeout, "the baseline worker's warm-up job", interval=0.05)


def read_marks(path: Path) -> dict[int, float]:
    """What --marks wrote: job id → when its handler started."""
    if not path.exists():
        return {}
    data: dict[str, float] = json.loads(path.read_text())
    return {int(k): float(v) for k, v in data.items()}


def timed_jobs(
    dsn: str,
    workdir: Path,
    connect: Callable[[], psycopg.Connection],
    schedule: Callable[[], dict[int, float]],
    timeout: float,
    interval: float,
) -> list[float]:
    """One run of the worker with the daemon's run() parameters (AS_DAEMON): started, warmed
    up, then `schedule()` enqueues its jobs (job id → the moment each is measured from, epoch
    seconds), and once none is left (within `timeout`) it is stopped. Each job's handler start
    minus that moment, in ms."""
    marks_path = workdir / f"marks-{time.monotonic_ns()}.json"
    proc = start(dsn, workdir, *AS_DAEMON, "--marks", str(marks_path))
    try:
        ready(connect, proc)
        since = schedule()
        with connect() as conn:
            wait_for(
                lambda: (
                    not conn.execute(
                        "SELECT count(*) FROM resync.pgqueuer WHERE id = ANY(%s)", (list(since),)
                    ).fetchone()[0]
                ),
                timeout,
                "the baseline worker to run every job",
                interval=interval,
            )
    finally:
        processes.stop(proc)
    marks = read_marks(marks_path)
    return [(marks[j] - t) * 1000 for j, t in since.items() if j in marks]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.pgq_noop", description=__doc__)
    p.add_argument("--dsn", required=True)
    p.add_argument("--drain", action="store_true", help="exit once the queue is empty")
    p.add_argument("--marks", help="write the handler start times here at exit")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--sleep", type=float, default=30.0, help="dequeue timeout, seconds")
    p.add_argument("--heartbeat-timeout", type=float, default=30.0)
    asyncio.run(work(p.parse_args()))


if __name__ == "__main__":
    main()
