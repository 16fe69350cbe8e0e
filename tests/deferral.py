"""What the tests of the writer's side share (the inline sync that cannot run, and what it
queues instead): sessions, waiting for a backend to block, a thread that hands back its
exception, and readers of the failures and jobs recorded."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from support import catalogue
from support.poll import wait_for


@contextlib.contextmanager
def session(dsn: str, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=autocommit) as connection:
        yield connection


def lock_waiting(observer: psycopg.Connection, pid: int) -> bool:
    row = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
        (pid,),
    ).fetchone()
    return bool(row and row[0])


def wait_until_blocked(observer: psycopg.Connection, pid: int, what: str = "") -> None:
    """Until backend `pid` waits on a lock (as `observer` sees it); `what` names the wait."""
    wait_for(lambda: lock_waiting(observer, pid), what=what or f"backend {pid} to wait on a lock")


class Worker(threading.Thread):
    """A thread that runs `fn`, keeping its exception for the main thread."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.error: BaseException | None = None
        self.result: Any = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the main thread by finish()
            self.error = exc

    def finish(self, timeout: float = 15.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "worker thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def failures(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT course_unit_id, action, reason, sqlstate, job_id FROM resync.sync_failures "
        "ORDER BY id"
    ).fetchall()


def seconds(delta: dt.timedelta) -> float:
    return delta.total_seconds()


def one_job(conn: psycopg.Connection, unit_id: int) -> dict[str, Any]:
    found = catalogue.jobs(conn)
    assert len(found) == 1, found
    job = found[0]
    assert job["headers"]["course_unit_id"] == str(unit_id)
    assert job["payload"]["course_unit_id"] == unit_id
    assert job["status"] == "queued"
    return job


def stat_updates(conn: psycopg.Connection) -> int:
    """n_tup_upd of course_units, with this backend's pending counters flushed first."""
    conn.execute("SELECT pg_stat_force_next_flush()")  # flushed when this backend goes idle
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'public.course_units'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- bulk statements: UNITS UEs of PER_UNIT elements each, loaded through the triggers --

UNITS = 2500
PER_UNIT = 4


def bulk_units(conn: psycopg.Connection, units: int = UNITS) -> None:
    conn.execute(
        "INSERT INTO course_units (code, name) "
        "SELECT 'B' || i, 'bulk ' || i FROM generate_series(1, %s) i",
        (units,),
    )


def bulk_elements(conn: psycopg.Connection, per_unit: int = PER_UNIT) -> None:
    """`per_unit` elements per unit in one statement, element k: credits k, hours k/2/3, total
    k+5."""
    conn.execute(
        "INSERT INTO course_unit_elements "
        "    (course_unit_id, code, name, credits, hours_cm, hours_td, hours_tp, hours_total) "
        "SELECT u.id, 'E' || u.id || '_' || k, 'e', k, k, 2, 3, k + 5 "
        "FROM course_units u CROSS JOIN generate_series(1, %s) k",
        (per_unit,),
    )
