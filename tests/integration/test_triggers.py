"""The element triggers in inline mode (sql/definitions/element_triggers.sql): what a single write
to course_unit_elements does to its course unit(s), field by field, and what it leaves alone."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from support import catalogue

LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _age_sync_stamp(conn: psycopg.Connection, unit_id: int) -> None:
    """Push last_element_sync into the past, so a later sync is visible as a newer stamp."""
    conn.execute(
        "UPDATE course_units SET last_element_sync = %s WHERE id = %s", (LONG_AGO, unit_id)
    )


def _stamps(conn: psycopg.Connection, unit_id: int) -> tuple[dt.datetime | None, ...]:
    row = conn.execute(
        "SELECT last_element_sync, last_job_sync FROM course_units WHERE id = %s", (unit_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def _distribution(conn: psycopg.Connection, unit_id: int) -> str:
    row = conn.execute(
        "SELECT hours_distribution::text FROM course_units WHERE id = %s", (unit_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def _now(conn: psycopg.Connection) -> dt.datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


def test_insert_syncs_totals_count_distribution_and_stamp(conn):
    u = catalogue.unit(conn)
    before = _now(conn)
    catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, u, credits=2.5, cm=4, td=4, tp=2)

    assert catalogue.totals(conn, u) == (Decimal("5.5"), 14, 9, 7, 30, 2)
    assert _distribution(conn, u) == '{"cm": 46.7, "td": 30.0, "tp": 23.3}'
    last_element_sync, last_job_sync = _stamps(conn, u)
    assert last_element_sync is not None and last_element_sync >= before
    assert last_job_sync is None  # the trigger is not a job
    assert catalogue.jobs(conn) == []
    assert conn.execute("SELECT count(*) FROM resync.sync_failures").fetchone()[0] == 0


def test_multi_row_insert_across_units_syncs_each(conn):
    a, b = catalogue.unit(conn), catalogue.unit(conn)
    conn.execute(
        "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, hours_cm, "
        "hours_td, hours_tp, hours_total) VALUES "
        "(%(a)s, 'X1', 'x', 1, 1, 2, 3, 6), (%(a)s, 'X2', 'x', 2, 1, 1, 1, 3), "
        "(%(b)s, 'X3', 'x', 4, 0, 8, 0, 8)",
        {"a": a, "b": b},
    )
    assert catalogue.totals(conn, a) == (3, 2, 3, 4, 9, 2)
    assert catalogue.totals(conn, b) == (4, 0, 8, 0, 8, 1)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        # unit: e1 (credits 3, 10/5/5 = 20) + e2 (credits 2, 4/4/2 = 10); e1 is changed
        ("credits", 4, (6, 14, 9, 7, 30, 2)),
        ("hours_cm", 20, (5, 24, 9, 7, 30, 2)),
        ("hours_td", 0, (5, 14, 4, 7, 30, 2)),
        ("hours_tp", 1, (5, 14, 9, 3, 30, 2)),
        ("hours_total", 50, (5, 14, 9, 7, 60, 2)),
        ("status", "inactive", (2, 4, 4, 2, 10, 1)),
        ("deleted_at", LONG_AGO, (2, 4, 4, 2, 10, 1)),
    ],
)
def test_update_of_each_counted_field_resyncs(conn, column, value, expected):
    u = catalogue.unit(conn)
    e1 = catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, u, credits=2, cm=4, td=4, tp=2)
    assert catalogue.totals(conn, u) == (5, 14, 9, 7, 30, 2)
    _age_sync_stamp(conn, u)

    conn.execute(f"UPDATE course_unit_elements SET {column} = %s WHERE id = %s", (value, e1))

    assert catalogue.totals(conn, u) == expected
    last_element_sync, last_job_sync = _stamps(conn, u)
    assert last_element_sync is not None and last_element_sync > LONG_AGO
    assert last_job_sync is None
    assert catalogue.jobs(conn) == []


def test_move_between_units_resyncs_both(conn):
    a, b = catalogue.unit(conn), catalogue.unit(conn)
    e = catalogue.element(conn, a, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, a, credits=1, cm=2, td=2, tp=2)
    catalogue.element(conn, b, credits=2, cm=1, td=1, tp=1)
    _age_sync_stamp(conn, a)
    _age_sync_stamp(conn, b)

    conn.execute("UPDATE course_unit_elements SET course_unit_id = %s WHERE id = %s", (b, e))

    assert catalogue.totals(conn, a) == (1, 2, 2, 2, 6, 1)
    assert catalogue.totals(conn, b) == (5, 11, 6, 6, 23, 2)
    assert _stamps(conn, a)[0] > LONG_AGO
    assert _stamps(conn, b)[0] > LONG_AGO
    assert catalogue.drift_count(conn) == 0


def test_move_to_no_unit_resyncs_the_old_one(conn):
    a = catalogue.unit(conn)
    e = catalogue.element(conn, a, credits=3, cm=10, td=5, tp=5)
    conn.execute("UPDATE course_unit_elements SET course_unit_id = NULL WHERE id = %s", (e,))
    assert catalogue.totals(conn, a) == (0, 0, 0, 0, 0, 0)
    assert _distribution(conn, a) == '{"cm": 0, "td": 0, "tp": 0}'


def test_soft_delete_then_restore(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, u, credits=2, cm=4, td=4, tp=2)

    conn.execute("UPDATE course_unit_elements SET deleted_at = now() WHERE id = %s", (e,))
    assert catalogue.totals(conn, u) == (2, 4, 4, 2, 10, 1)
    assert _distribution(conn, u) == '{"cm": 40.0, "td": 40.0, "tp": 20.0}'

    conn.execute("UPDATE course_unit_elements SET deleted_at = NULL WHERE id = %s", (e,))
    assert catalogue.totals(conn, u) == (5, 14, 9, 7, 30, 2)
    assert catalogue.jobs(conn) == []


def test_hard_delete(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, u, credits=2, cm=4, td=4, tp=2)
    conn.execute("DELETE FROM course_unit_elements WHERE id = %s", (e,))
    assert catalogue.totals(conn, u) == (2, 4, 4, 2, 10, 1)
    conn.execute("DELETE FROM course_unit_elements WHERE course_unit_id = %s", (u,))
    assert catalogue.totals(conn, u) == (0, 0, 0, 0, 0, 0)
    assert _distribution(conn, u) == '{"cm": 0, "td": 0, "tp": 0}'


def test_deleting_the_unit_cascades_without_error_or_job(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u)
    catalogue.element(conn, u)
    conn.execute("DELETE FROM course_units WHERE id = %s", (u,))
    assert conn.execute("SELECT count(*) FROM course_unit_elements").fetchone()[0] == 0
    assert catalogue.jobs(conn) == []
    assert conn.execute("SELECT count(*) FROM resync.sync_failures").fetchone()[0] == 0


def test_status_change_to_non_active_stops_counting(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, u, credits=2, cm=4, td=4, tp=2)
    for status in ("inactive", "draft", "archived"):
        conn.execute("UPDATE course_unit_elements SET status = %s WHERE id = %s", (status, e))
        assert catalogue.totals(conn, u) == (2, 4, 4, 2, 10, 1), status
    conn.execute("UPDATE course_unit_elements SET status = 'active' WHERE id = %s", (e,))
    assert catalogue.totals(conn, u) == (5, 14, 9, 7, 30, 2)


def test_inserted_inactive_or_deleted_elements_do_not_count(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, u, credits=9, cm=9, td=9, tp=9, status="inactive")
    catalogue.element(conn, u, credits=9, cm=9, td=9, tp=9, deleted_at=LONG_AGO)
    assert catalogue.totals(conn, u) == (3, 10, 5, 5, 20, 1)


def test_update_of_a_non_counted_field_does_not_sync(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    _age_sync_stamp(conn, u)
    conn.execute(
        "UPDATE course_unit_elements SET name = 'renamed', code = 'NEWCODE', "
        "updated_at = now() WHERE id = %s",
        (e,),
    )
    assert _stamps(conn, u) == (LONG_AGO, None)
    # Setting a counted field to the value it already has is not a change either.
    conn.execute("UPDATE course_unit_elements SET credits = 3, hours_cm = 10 WHERE id = %s", (e,))
    assert _stamps(conn, u) == (LONG_AGO, None)
    assert catalogue.jobs(conn) == []


def test_auto_sync_disabled_unit_is_left_alone(conn):
    u = catalogue.unit(conn, auto_sync_enabled=False, credits=7, hours_cm=1)
    e = catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    conn.execute("UPDATE course_unit_elements SET hours_td = 50 WHERE id = %s", (e,))
    conn.execute("DELETE FROM course_unit_elements WHERE id = %s", (e,))
    assert catalogue.totals(conn, u) == (7, 1, 0, 0, 0, 0)
    assert _stamps(conn, u) == (None, None)
    assert catalogue.jobs(conn) == []


def test_move_from_disabled_unit_still_syncs_the_enabled_one(conn):
    off = catalogue.unit(conn, auto_sync_enabled=False)
    on = catalogue.unit(conn)
    e = catalogue.element(conn, off, credits=3, cm=10, td=5, tp=5)
    conn.execute("UPDATE course_unit_elements SET course_unit_id = %s WHERE id = %s", (on, e))
    assert catalogue.totals(conn, on) == (3, 10, 5, 5, 20, 1)
    assert catalogue.totals(conn, off) == (0, 0, 0, 0, 0, 0)
    assert _stamps(conn, off) == (None, None)


def test_credits_not_synced_when_flag_off_hours_are(conn):
    u = catalogue.unit(conn, sync_credits_with_elements=False, credits=6)
    e = catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, u, credits=1, cm=2, td=2, tp=2)
    assert catalogue.totals(conn, u) == (6, 12, 7, 7, 26, 2)
    conn.execute("UPDATE course_unit_elements SET credits = 5, hours_tp = 15 WHERE id = %s", (e,))
    assert catalogue.totals(conn, u) == (6, 12, 7, 17, 26, 2)  # hours_total is its own column
    assert catalogue.drift_count(conn) == 0


def test_hours_not_synced_when_flag_off_credits_are(conn):
    u = catalogue.unit(
        conn,
        sync_hours_with_elements=False,
        hours_cm=20,
        hours_td=10,
        hours_tp=10,
        hours_total=40,
    )
    e = catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, u, credits=1, cm=2, td=2, tp=2)
    assert catalogue.totals(conn, u) == (4, 20, 10, 10, 40, 2)
    # The distribution follows the hours kept on the unit.
    assert _distribution(conn, u) == '{"cm": 50.0, "td": 25.0, "tp": 25.0}'
    conn.execute("UPDATE course_unit_elements SET credits = 5, hours_tp = 15 WHERE id = %s", (e,))
    assert catalogue.totals(conn, u) == (6, 20, 10, 10, 40, 2)
    assert catalogue.drift_count(conn) == 0


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        ((10, 10, 10, 30), '{"cm": 33.3, "td": 33.3, "tp": 33.3}'),
        ((1, 2, 0, 3), '{"cm": 33.3, "td": 66.7, "tp": 0.0}'),
        ((10, 5, 5, 40), '{"cm": 25.0, "td": 12.5, "tp": 12.5}'),  # total as stored, not cm+td+tp
        ((2, 1, 0, 3), '{"cm": 66.7, "td": 33.3, "tp": 0.0}'),
        ((5, 5, 5, 0), '{"cm": 0, "td": 0, "tp": 0}'),
        ((5, 5, 5, -1), '{"cm": 0, "td": 0, "tp": 0}'),
        ((0, 0, 0, 0), '{"cm": 0, "td": 0, "tp": 0}'),
    ],
)
def test_hours_distribution_percentages(conn, hours, expected):
    cm, td, tp, total = hours
    u = catalogue.unit(conn)
    catalogue.element(conn, u, cm=cm, td=td, tp=tp, hours_total=total)
    assert _distribution(conn, u) == expected


def test_elements_count_follows_active_elements(conn):
    u = catalogue.unit(conn)
    ids = [catalogue.element(conn, u) for _ in range(4)]
    assert catalogue.totals(conn, u)[5] == 4
    conn.execute("UPDATE course_unit_elements SET status = 'inactive' WHERE id = %s", (ids[0],))
    conn.execute("UPDATE course_unit_elements SET deleted_at = now() WHERE id = %s", (ids[1],))
    assert catalogue.totals(conn, u)[5] == 2
    conn.execute("DELETE FROM course_unit_elements WHERE id = %s", (ids[2],))
    assert catalogue.totals(conn, u)[5] == 1


def test_sync_now_sets_last_job_sync(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u)
    assert _stamps(conn, u)[1] is None
    before = _now(conn)
    conn.execute("SELECT resync.sync_now(%s)", (u,))
    last_element_sync, last_job_sync = _stamps(conn, u)
    assert last_job_sync is not None and last_job_sync >= before
    assert last_element_sync == last_job_sync
