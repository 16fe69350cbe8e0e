"""Small helpers to build a catalogue and read it back, shared by the test tiers."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

_codes = itertools.count(1)
T = TypeVar("T")
POLL = 0.02  # seconds between two probes of a polled condition
_tick = threading.Event()  # never set: wait() is an interruptible pause


def _insert(conn: psycopg.Connection, table: str, values: dict[str, Any]) -> int:
    """INSERT one row of `values` into `table` (a fixed name from this module); its id."""
    cols = ", ".join(values)
    marks = ", ".join(f"%({k})s" for k in values)
    row = conn.execute(
        f"INSERT INTO {table} ({cols}) VALUES ({marks}) RETURNING id", values
    ).fetchone()
    assert row is not None
    return int(row[0])


def unit(conn: psycopg.Connection, **columns: Any) -> int:
    """Insert a course unit; returns its id."""
    n = next(_codes)
    values = {"code": f"UE{n:04d}", "name": f"Unit {n}", **columns}
    return _insert(conn, "course_units", values)


def element(
    conn: psycopg.Connection,
    unit_id: int | None,
    credits: float = 3,
    cm: float = 10,
    td: float = 10,
    tp: float = 10,
    **columns: Any,
) -> int:
    """Insert an element; hours_total is cm + td + tp unless given. Returns its id."""
    n = next(_codes)
    values = {
        "course_unit_id": unit_id,
        "code": f"EC{n:04d}",
        "name": f"Element {n}",
        "credits": credits,
        "hours_cm": cm,
        "hours_td": td,
        "hours_tp": tp,
        "hours_total": columns.pop("hours_total", cm + td + tp),
        **columns,
    }
    return _insert(conn, "course_unit_elements", values)


def read_unit(conn: psycopg.Connection, unit_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM course_units WHERE id = %s", (unit_id,)).fetchone()
    assert row is not None, f"no course unit {unit_id}"
    return row


def totals(conn: psycopg.Connection, unit_id: int) -> tuple[Decimal, ...]:
    """(credits, cm, td, tp, total, elements_count) as stored."""
    row = conn.execute(
        "SELECT credits, hours_cm, hours_td, hours_tp, hours_total, elements_count "
        "FROM course_units WHERE id = %s",
        (unit_id,),
    ).fetchone()
    assert row is not None
    return tuple(Decimal(v) for v in row)


def jobs(conn: psycopg.Connection, unit_id: int | None = None) -> list[dict[str, Any]]:
    """The resync jobs in the queue table, oldest first, optionally for one unit."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, status::text AS status, execute_after, attempts, headers, "
            "       resync.payload_json(payload) AS payload, execute_after - now() AS due_in, "
            "       resync_events AS events, resync_last_reason AS last_reason, "
            "       resync_deadline - now() AS deadline_in "
            "FROM resync.pgqueuer "
            "WHERE %(unit)s::bigint IS NULL OR headers ->> 'course_unit_id' = %(unit)s::text "
            "ORDER BY id",
            {"unit": unit_id},
        ).fetchall()


def drift_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM resync.drift").fetchone()
    assert row is not None
    return int(row[0])


def wait_for(
    probe: Callable[[], T | None], timeout: float = 10.0, what: str = "", interval: float = POLL
) -> T:
    """Poll `probe` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
        _tick.wait(interval)  # a poll interval, not a synchronisation


async def await_for(probe: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Async twin for tests only: await `probe()` until truthy, or fail after `timeout`."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
        await asyncio.sleep(POLL)
