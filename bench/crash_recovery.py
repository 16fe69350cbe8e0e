"""Crash recovery: two daemons run with their defaults (heartbeat timeout 8 s, --sleep 3 s). A
session holds a UE's row lock, a resync of that UE is requested, and once a daemon's resync
waits on the lock (the job in flight) that daemon is SIGKILLed and the lock released. Measured:
the kill (server clock, read right after the kill) → the surviving daemon's re-run of the job
started (resync.job_runs.started_at of attempt 2) and finished. A new daemon replaces the
killed one before the next round.

--quick uses a 2 s heartbeat timeout and a 0.5 s poll: it only proves the path still works."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from bench import common
from bench.common import Bench, Target
from support import processes
from support.catalogue import load_catalogue

NAME = "crash_recovery"
TITLE = "daemon SIGKILLed mid-job, another running: kill → job re-run"


def measure(b: Bench) -> None:
    env = {"UE_RESYNC_HEARTBEAT_TIMEOUT": "2", "UE_RESYNC_SLEEP": "0.5"} if b.quick else {}
    units = b.rounds + 2
    b.params.update(
        daemons=2,
        settings=env or "defaults: heartbeat timeout 8 s, sleep 3 s",
        resync_timeout="UE_RESYNC_TIMEOUT=60 (the held lock must outlast the wait)",
    )
    env["UE_RESYNC_TIMEOUT"] = "60"
    with b.connect() as conn:
        load_catalogue(conn, units)
    procs: list[Any] = []
    started: list[float] = []
    finished: list[float] = []
    try:
        for r in range(b.rounds):
            while len(procs) < 2:
                proc = b.start_daemon(**env)
                procs.append(proc)
                b.daemon_ready(proc, units - len(procs) + 1)
            s, f, killed = one_crash(b, procs, unit=r + 1)
            procs.remove(killed)
            started.append(s)
            finished.append(f)
            common.log(f"crash_recovery: round {r + 1}/{b.rounds}: re-run after {s:.2f} s")
    finally:
        for proc in procs:
            processes.stop(proc)
    b.paired("kill → job re-run started", "s", started, target=Target("<=", 15.0, on="value"))
    b.paired("kill → job re-run finished", "s", finished)


def one_crash(b: Bench, procs: list[Any], unit: int) -> tuple[float, float, Any]:
    with b.connect() as conn, b.connect() as holder:
        with holder.transaction():
            holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (unit,))
            job = conn.execute("SELECT resync.request(%s, 'bench_crash')", (unit,)).fetchone()[0]

            def in_flight() -> int | None:
                row = conn.execute(
                    """
                    SELECT w.pid FROM resync.job_runs r
                    JOIN resync.workers w ON w.id = r.worker_id
                    WHERE r.job_id = %s AND r.outcome = 'running'
                      AND EXISTS (SELECT 1 FROM pg_stat_activity a
                                  WHERE a.datname = current_database()
                                    AND a.application_name LIKE 'ue-resync%%resync-%%'
                                    AND a.wait_event_type = 'Lock')
                    """,
                    (job,),
                ).fetchone()
                return row[0] if row else None

            pid = common.wait_for(in_flight, 30, "the resync to wait on the held row")
            victim = next(p for p in procs if p.pid == pid)
            os.kill(pid, signal.SIGKILL)
            killed_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            victim.wait(10)
        # The lock is released here; the survivor picks the job once its heartbeat is stale.

        def rerun() -> tuple[Any, Any] | None:
            for p in procs:
                if p is not victim:
                    processes.check_alive(p)
            return conn.execute(
                "SELECT started_at, finished_at FROM resync.job_runs "
                "WHERE job_id = %s AND outcome = 'succeeded' AND attempt = 2",
                (job,),
            ).fetchone()

        s, f = common.wait_for(rerun, 90, "the job to be re-run", interval=0.05)
        crashed = conn.execute(
            "SELECT count(*) FROM resync.job_runs WHERE job_id = %s AND outcome = 'crashed'",
            (job,),
        ).fetchone()[0]
        if crashed != 1:
            raise RuntimeError(f"expected the killed run marked crashed, found {crashed}")
    return (s - killed_at).total_seconds(), (f - killed_at).total_seconds(), victim


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(NAME, TITLE, measure, argv, __doc__, full_rounds=3, quick_rounds=1)


if __name__ == "__main__":
    sys.exit(main())
