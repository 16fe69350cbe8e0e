"""`ue-resync demo`: the whole system on an embedded PostgreSQL, in about half a minute.

It never touches a configured database: it starts its own server in --data-dir, creates a
database there, migrates it, loads a small catalogue, starts the real daemon as a subprocess and
walks through the paths an operator should know, narrating what happens and why."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from ue_resync import catalogue, embedded, ledger, migrate, output
from ue_resync.demo_catalogue import load_catalogue
from ue_resync.queries import query
from ue_resync.settings import Settings

DBNAME = "ue_resync_demo"
T = TypeVar("T")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(n: int, title: str) -> None:
    _say(f"\n=== {n}. {title} ===")


def _wait(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo: timed out waiting for {what}")
        pause.wait(0.05)


def _show_unit(conn: psycopg.Connection, unit_id: int) -> str:
    row = conn.execute(
        "SELECT code, credits, hours_cm, hours_td, hours_tp, hours_total, elements_count,"
        " hours_distribution, last_job_sync IS NOT NULL FROM course_units WHERE id = %s",
        (unit_id,),
    ).fetchone()
    assert row is not None
    code, credits, cm, td, tp, total, n, dist, by_job = row
    return (
        f"{code}: {credits} ECTS, CM {cm} / TD {td} / TP {tp} = {total} h, {n} ECUE, "
        f"distribution {dist}, last_job_sync {'set' if by_job else 'empty'}"
    )


@contextlib.contextmanager
def _daemon(uri: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "UE_RESYNC_DATABASE_URL": uri,
        # The demo scales the 30/60/120 s backoff down 20 times, to watch a retry happen.
        "UE_RESYNC_TIME_SCALE": "0.05",
        "UE_RESYNC_SLEEP": "1",
        "UE_RESYNC_LOG_FORMAT": "text",
        "UE_RESYNC_MAX_TIME": "0",
    }
    proc = subprocess.Popen([sys.executable, "-m", "ue_resync", "work"], env=env)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _scalar(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params or None).fetchone()
    return row[0] if row else None


def run_demo(settings: Settings, data_dir: Path, keep: bool) -> int:
    embedded.load(data_dir.expanduser().resolve().parent)  # NotInstalled before any output
    if settings.has_database():
        _say("(a database is configured; the demo ignores it and uses its own embedded server)")
    _step(1, f"embedded PostgreSQL in {data_dir}")
    server = embedded.start(data_dir, keep=keep)
    try:
        with psycopg.connect(server.uri(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {DBNAME}")
            version = admin.info.server_version
        uri = server.uri(DBNAME)
        _say(f"PostgreSQL {version // 10000}.{version % 10000} is up; database {DBNAME}")
        return _walkthrough(server, uri)
    finally:
        if keep:
            _say(
                f"\nThe server keeps running (--keep). Connect with:\n  "
                f"{server.psql_command(DBNAME)}"
            )
        else:
            server.stop()


def _walkthrough(server: embedded.EmbeddedServer, uri: str) -> int:
    with psycopg.connect(uri, autocommit=True) as conn:
        _install(conn)
        _load(conn)
        with _daemon(uri):
            _wait(
                lambda: _scalar(
                    conn, "SELECT count(*) FROM resync.workers WHERE stopped_at IS NULL"
                ),
                20,
                "the daemon to start",
            )
            _say("the daemon (ue-resync work) is running and listening")
            _inline_edit(conn)
            _deferred_edit(conn, uri)
            _manual_request(conn)
            _failing_job(conn)
        _monitor(conn)
    _say(f"\nConnect to the demo database with:\n  {server.psql_command(DBNAME)}")
    return 0


def _install(conn: psycopg.Connection) -> None:
    _step(2, "the application's tables, then migrations")
    catalogue.create_tables(conn)
    applied = migrate.apply(conn)
    _say(f"applied {len(applied)} migrations; schema at version {ledger.check_current(conn)}")


def _load(conn: psycopg.Connection) -> None:
    _step(3, "a small catalogue")
    units, elements = load_catalogue(conn)
    _say(
        f"loaded {units} UEs and {elements} ECUE; every UE was synced inline by the "
        f"triggers: drift = {_scalar(conn, 'SELECT count(*) FROM resync.drift')}"
    )


def _inline_edit(conn: psycopg.Connection) -> None:
    """An element's hours changed: its UE is right as soon as the UPDATE returns."""
    unit, element = conn.execute(
        "SELECT course_unit_id, id FROM course_unit_elements ORDER BY id LIMIT 1"
    ).fetchone()  # type: ignore[misc]
    _step(4, "a normal edit is synced inline, in the writer's transaction")
    _say("before: " + _show_unit(conn, unit))
    conn.execute(
        "UPDATE course_unit_elements SET hours_tp = hours_tp + 6, "
        "hours_total = hours_total + 6 WHERE id = %s",
        (element,),
    )
    _say("after:  " + _show_unit(conn, unit))


def _deferred_edit(conn: psycopg.Connection, uri: str) -> None:
    """Another session holds the UE row: the writer commits at once, its job is due after the
    error policy's delay (3 s here), and the daemon resyncs the UE once the row is free."""
    _step(5, "an edit while another session holds the UE row: deferred, then resynced")
    conn.execute(
        "INSERT INTO resync.error_policy (sqlstate_pattern, reason_prefix, delay,"
        " note) VALUES ('55P03', 'sync_error', interval '3 seconds', 'demo')"
        " ON CONFLICT (sqlstate_pattern) DO UPDATE SET delay = excluded.delay"
    )
    _say("(the demo sets lock_not_available to a 3 s delay in resync.error_policy)")
    unit, element = conn.execute(
        "SELECT course_unit_id, id FROM course_unit_elements ORDER BY id OFFSET 5 LIMIT 1"
    ).fetchone()  # type: ignore[misc]
    with psycopg.connect(uri) as holder:
        holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (unit,))
        started = time.monotonic()
        conn.execute(
            "UPDATE course_unit_elements SET credits = credits + 1 WHERE id = %s", (element,)
        )
        _say(
            f"the writer committed after {1000 * (time.monotonic() - started):.0f} ms "
            "without waiting for the lock; the job it queued:"
        )
        job = conn.execute(
            "SELECT id, headers ->> 'reason', round(extract(epoch FROM execute_after -"
            " now()))::int FROM resync.pgqueuer WHERE headers ->> 'course_unit_id' = "
            "%s::text AND status = 'queued'",
            (unit,),
        ).fetchone()
        _say(f"  job {job[0]}, reason {job[1]}, due in {job[2]} s")  # type: ignore[index]
        holder.rollback()
    _say("the other session released the row; waiting for the daemon...")
    _wait_for_job_sync(conn, unit, 30, "the deferred resync")
    _say("resynced: " + _show_unit(conn, unit))


def _manual_request(conn: psycopg.Connection) -> None:
    _step(6, "a manual request from psql")
    unit = _scalar(conn, "SELECT id FROM course_units ORDER BY id OFFSET 10 LIMIT 1")
    sql = f"INSERT INTO resync.requests (course_unit_id, reason) VALUES ({unit}, 'manual_trigger');"
    _say(f"  {sql}")
    conn.execute(sql)
    _wait_for_job_sync(conn, unit, 15, "the manual resync")
    _say("done: " + _show_unit(conn, unit))


def _failing_job(conn: psycopg.Connection) -> None:
    """A CHECK constraint refuses what the UE's resync would write: each attempt fails, and the
    job is retried on the (scaled) backoff until it fails for good."""
    _step(7, "a resync that keeps failing: retried 30 s / 60 s later (scaled), then failed")
    unit = _scalar(conn, "SELECT id FROM course_units ORDER BY id OFFSET 20 LIMIT 1")
    conn.execute(
        "ALTER TABLE course_units ADD CONSTRAINT demo_credits_at_most_30 "
        "CHECK (credits <= 30) NOT VALID"
    )
    # Mode off: the insert neither syncs nor queues; the one job is the request below.
    conn.execute("SET ue_resync.mode = 'off'")
    conn.execute(
        "INSERT INTO course_unit_elements (course_unit_id, code, name, credits)"
        " VALUES (%s, 'BIG', 'An oversized element', 40)",
        (unit,),
    )
    conn.execute("RESET ue_resync.mode")
    _say("(a CHECK constraint now refuses the 40-credit total this UE would get)")
    job = _scalar(conn, "SELECT resync.request(%s, 'demo_failure')", unit)
    _wait(
        lambda: _scalar(conn, "SELECT count(*) FROM resync.failed_jobs WHERE job_id = %s", job),
        30,
        "the job to fail",
    )
    for attempt, outcome, error in conn.execute(
        "SELECT attempt, outcome, error FROM resync.job_runs WHERE job_id = %s ORDER BY id",
        (job,),
    ):
        _say(f"  attempt {attempt}: {outcome} — {error}")


def _monitor(conn: psycopg.Connection) -> None:
    _step(8, "ue-resync monitor, ue-resync failed")
    with conn.cursor(row_factory=dict_row) as cur:
        status = cur.execute(query("queue_status")).fetchone()
        assert status is not None
        _say(output.monitor_text(status))
        _say("")
        _say(output.failed_text(cur.execute(query("failed_jobs")).fetchall()))


def _wait_for_job_sync(conn: psycopg.Connection, unit: int, timeout: float, what: str) -> None:
    """Until a job of the daemon has synced `unit` (its last_job_sync is set)."""
    _wait(
        lambda: _scalar(
            conn, "SELECT last_job_sync IS NOT NULL FROM course_units WHERE id = %s", unit
        ),
        timeout,
        what,
    )
