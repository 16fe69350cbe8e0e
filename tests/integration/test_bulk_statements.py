"""A statement touching thousands of elements: every UE concerned is synced once, by the
statement triggers, whatever the action (insert, update, move between UEs, delete)."""

from __future__ import annotations

from typing import Any

import psycopg

from support import catalogue
from tests.deferral import (
    PER_UNIT,
    UNITS,
    bulk_elements,
    bulk_units,
    stat_updates,
)


def _sample(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT credits, hours_cm, hours_td, hours_tp, hours_total, elements_count, "
        "       count(*) "
        "FROM course_units GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1"
    ).fetchall()


def test_bulk_insert_syncs_every_unit_once(conn):
    bulk_units(conn)
    before = stat_updates(conn)
    bulk_elements(conn)
    assert stat_updates(conn) - before == UNITS
    assert catalogue.drift_count(conn) == 0
    assert _sample(conn) == [(10, 10, 8, 12, 30, 4, UNITS)]
    assert catalogue.jobs(conn) == []


def test_bulk_update_of_10000_elements_syncs_every_unit_once(conn):
    bulk_units(conn)
    bulk_elements(conn)
    before = stat_updates(conn)
    status = conn.execute(
        "UPDATE course_unit_elements SET hours_td = hours_td + 1, credits = credits * 2"
    ).rowcount
    assert status == UNITS * PER_UNIT
    assert stat_updates(conn) - before == UNITS
    assert catalogue.drift_count(conn) == 0
    assert _sample(conn) == [(20, 10, 12, 12, 30, 4, UNITS)]
    assert catalogue.jobs(conn) == []


def test_bulk_move_syncs_source_and_target_once(conn):
    bulk_units(conn)
    bulk_elements(conn)
    before = stat_updates(conn)
    # Element 1 of every odd unit moves to the next unit: every unit is touched once.
    moved = conn.execute(
        "UPDATE course_unit_elements e SET course_unit_id = e.course_unit_id + 1 "
        "FROM (SELECT min(id) AS first FROM course_units) m "
        "WHERE (e.course_unit_id - m.first) % 2 = 0 AND e.code LIKE '%\\_1'"
    ).rowcount
    assert moved == UNITS // 2
    assert stat_updates(conn) - before == UNITS
    assert catalogue.drift_count(conn) == 0
    assert _sample(conn) == [
        (9, 9, 6, 9, 24, 3, UNITS // 2),
        (11, 11, 10, 15, 36, 5, UNITS // 2),
    ]


def test_bulk_delete_syncs_every_unit_once(conn):
    bulk_units(conn)
    bulk_elements(conn)
    before = stat_updates(conn)
    deleted = conn.execute("DELETE FROM course_unit_elements WHERE credits >= 3").rowcount
    assert deleted == UNITS * 2
    assert stat_updates(conn) - before == UNITS
    assert catalogue.drift_count(conn) == 0
    assert _sample(conn) == [(3, 3, 4, 6, 13, 2, UNITS)]
