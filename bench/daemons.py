"""Processes the benchmarks start: the real daemon (`python -m ue_resync work`, settings from the
environment as in production, logging text lines to a file) and the baseline no-op worker
(bench/pgq_noop.py). Each runs in the benchmark's scratch directory, so no .env is read."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import ROOT, Bench, wait_for

NOOP = "bench_noop"


def _env(dsn: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UE_RESYNC_", "DATABASE_URL", "JOURNAL_STREAM", "NOTIFY_SOCKET"))
    }
    env["UE_RESYNC_DATABASE_URL"] = dsn
    env["UE_RESYNC_LOG_FORMAT"] = "text"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def _spawn(bench: Bench, tag: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path = bench.workdir / f"{tag}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=bench.workdir, stdout=out, stderr=subprocess.STDOUT
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def start_daemon(bench: Bench, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`ue-resync work ARGS`; `env` adds UE_RESYNC_* settings (defaults otherwise).
    BENCH_DAEMON replaces `python -m ue_resync` (a candidate daemon, see bench/README.md)."""
    command = shlex.split(os.environ.get("BENCH_DAEMON", "")) or [sys.executable, "-m", "ue_resync"]
    return _spawn(bench, "daemon", [*command, "work", *args], _env(bench.dsn, **env))


# The daemon's own run() parameters (its defaults: batch 50, --sleep 3, heartbeat timeout 8 s),
# for a baseline that differs from the daemon by the handler only.
AS_DAEMON = ("--batch-size", "50", "--sleep", "3", "--heartbeat-timeout", "8")


def start_noop(bench: Bench, *args: str) -> subprocess.Popen[bytes]:
    """bench/pgq_noop.py ARGS: pgqueuer's run() defaults unless ARGS say otherwise."""
    return _spawn(
        bench,
        "noop",
        [sys.executable, "-m", "bench.pgq_noop", "--dsn", bench.dsn, *args],
        _env(bench.dsn),
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM (the daemon drains what it holds), then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(10)


def tail(proc: subprocess.Popen[bytes], lines: int = 20) -> str:
    path: Path | None = getattr(proc, "log_path", None)
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


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

        wait_for(done, timeout, "the daemon's warm-up job", poll=0.05)


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

        wait_for(done, timeout, "the baseline worker's warm-up job", poll=0.05)


def read_marks(path: Path) -> dict[int, float]:
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return {int(k): float(v) for k, v in data.items()}
