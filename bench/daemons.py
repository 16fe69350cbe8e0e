"""Processes the benchmarks start: the real daemon (`python -m ue_resync work`, settings from the
environment as in production, logging text lines to a file) and the baseline no-op worker
(bench/pgq_noop.py), both through support.daemon. Each runs in the benchmark's scratch directory,
so no .env is read."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import Bench, wait_for
from support import daemon
from support.env import pythonpath, scrubbed_env

NOOP = "bench_noop"


def start_daemon(bench: Bench, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`ue-resync work ARGS`; `env` adds UE_RESYNC_* settings (defaults otherwise).
    BENCH_DAEMON replaces `python -m ue_resync` (a candidate daemon, see bench/README.md)."""
    candidate = shlex.split(os.environ.get("BENCH_DAEMON", ""))
    return daemon.spawn(
        bench.dsn,
        "work",
        *args,
        cwd=bench.workdir,
        log=bench.workdir / f"daemon-{time.monotonic_ns()}.log",
        command=candidate or daemon.UE_RESYNC,
        env=scrubbed_env(bench.dsn, PYTHONPATH=pythonpath(checkout_daemon=not candidate), **env),
    )


# The daemon's own run() parameters (its defaults: batch 50, --sleep 3, heartbeat timeout 8 s),
# for a baseline that differs from the daemon by the handler only.
AS_DAEMON = ("--batch-size", "50", "--sleep", "3", "--heartbeat-timeout", "8")


def start_noop(bench: Bench, *args: str) -> subprocess.Popen[bytes]:
    """bench/pgq_noop.py ARGS: pgqueuer's run() defaults unless ARGS say otherwise."""
    return daemon.spawn(
        bench.dsn,
        "--dsn",
        bench.dsn,
        *args,
        cwd=bench.workdir,
        log=bench.workdir / f"noop-{time.monotonic_ns()}.log",
        command=(sys.executable, "-m", "bench.pgq_noop"),
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM (the daemon drains what it holds), then SIGKILL if it lingers; the exit status."""
    daemon.stop(proc, timeout)
    return proc.wait(10)


tail = daemon.tail


def check_alive(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"process exited with {proc.returncode}:\n{tail(proc)}")


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"process still running after {timeout:g} s:\n{tail(proc)}") from None
    if code != 0:
        raise RuntimeError(f"process exited with {code}:\n{tail(proc)}")
    return code


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process, from /proc (Linux), in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def daemon_ready(
    bench: Bench, proc: subprocess.Popen[bytes], unit: int, timeout: float = 30
) -> None:
    """Wait until the daemon has resynced one warm-up job: it is listening and its loop turns."""
    with bench.connect() as conn:
        job = conn.execute("SELECT resync.request(%s, 'bench_warm_up')", (unit,)).fetchone()[0]

        def done() -> bool:
            check_alive(proc)
            return bool(
                conn.execute(
                    "SELECT count(*) FROM resync.job_runs "
                    "WHERE job_id = %s AND outcome = 'succeeded'",
                    (job,),
                ).fetchone()[0]
            )

        wait_for(done, timeout, "the daemon's warm-up job", interval=0.05)


def noop_enqueue(conn: psycopg.Connection, delay: float = 0.0) -> int:
    """One no-op job through pgqueuer's own enqueue (the SQL its Queries.enqueue runs)."""
    from datetime import timedelta

    from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
    from pgqueuer.adapters.persistence import qb
    from pgqueuer.adapters.persistence.queries import SyncQueries

    from bench.pgq_noop import SETTINGS

    queries = SyncQueries(SyncPsycopgDriver(conn), qbq=qb.QueryQueueBuilder(settings=SETTINGS))
    return int(queries.enqueue(NOOP, b"{}", execute_after=timedelta(seconds=delay))[0])


def noop_ready(bench: Bench, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until the baseline worker has run one warm-up job."""
    with bench.connect() as conn:
        job = noop_enqueue(conn)

        def done() -> bool:
            check_alive(proc)
            return not conn.execute(
                "SELECT count(*) FROM resync.pgqueuer WHERE id = %s", (job,)
            ).fetchone()[0]

        wait_for(done, timeout, "the baseline worker's warm-up job", interval=0.05)


def read_marks(path: Path) -> dict[int, float]:
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return {int(k): float(v) for k, v in data.items()}
