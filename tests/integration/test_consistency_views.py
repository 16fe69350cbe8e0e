"""The views operators read (sql/definitions/consistency.sql): resync.expected, resync.drift and
resync.validation_warnings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from support import catalogue


def drift_rows(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM resync.drift ORDER BY course_unit_id").fetchall()


def warnings_of(conn: psycopg.Connection, unit_id: int) -> list[tuple[str, str]]:
    return [
        (w, d)
        for w, d in conn.execute(
            "SELECT warning, detail FROM resync.validation_warnings "
            "WHERE course_unit_id = %s ORDER BY warning",
            (unit_id,),
        ).fetchall()
    ]


def test_synced_catalogue_has_no_drift(conn):
    for _ in range(3):
        u = catalogue.unit(conn)
        catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
        catalogue.element(conn, u, credits=1, cm=1, td=1, tp=1, status="inactive")
    catalogue.unit(conn)  # no elements: zeros are what it should hold
    assert drift_rows(conn) == []


def test_drift_lists_a_tampered_unit_with_stored_and_expected(conn):
    tampered = catalogue.unit(conn)
    catalogue.element(conn, tampered, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, tampered, credits=2, cm=2, td=2, tp=6)
    clean = catalogue.unit(conn)
    catalogue.element(conn, clean, credits=1)
    disabled = catalogue.unit(conn, auto_sync_enabled=False, credits=42)
    catalogue.element(conn, disabled, credits=1)

    conn.execute(
        "UPDATE course_units SET credits = 9, hours_td = 1, elements_count = 7 WHERE id = %s",
        (tampered,),
    )

    [row] = drift_rows(conn)
    code = catalogue.read_unit(conn, tampered)["code"]
    assert row["course_unit_id"] == tampered
    assert row["code"] == code
    assert (row["stored_credits"], row["expected_credits"]) == (9, 5)
    assert (row["stored_hours_cm"], row["expected_hours_cm"]) == (12, 12)
    assert (row["stored_hours_td"], row["expected_hours_td"]) == (1, 7)
    assert (row["stored_hours_tp"], row["expected_hours_tp"]) == (11, 11)
    assert (row["stored_hours_total"], row["expected_hours_total"]) == (30, 30)
    assert (row["stored_elements_count"], row["expected_elements_count"]) == (7, 2)
    assert (
        row["stored_hours_distribution"]
        == row["expected_hours_distribution"]
        == {
            "cm": 40.0,
            "td": 23.3,
            "tp": 36.7,
        }
    )
    assert row["last_element_sync"] is not None
    assert row["last_job_sync"] is None
    assert catalogue.drift_count(conn) == 1


def test_drift_sees_a_tampered_distribution_alone(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    conn.execute(
        """UPDATE course_units SET hours_distribution = '{"cm": 50, "td": 25, "tp": 20}'
           WHERE id = %s""",
        (u,),
    )
    [row] = drift_rows(conn)
    assert row["stored_hours_distribution"] == {"cm": 50, "td": 25, "tp": 20}
    assert row["expected_hours_distribution"] == {"cm": 50.0, "td": 25.0, "tp": 25.0}


def test_drift_honours_the_sync_flags(conn):
    credits_off = catalogue.unit(conn, sync_credits_with_elements=False, credits=6)
    catalogue.element(conn, credits_off, credits=3, cm=10, td=5, tp=5)
    hours_off = catalogue.unit(conn, sync_hours_with_elements=False, hours_cm=1, hours_total=1)
    catalogue.element(conn, hours_off, credits=3, cm=10, td=5, tp=5)
    assert drift_rows(conn) == []
    conn.execute("UPDATE course_units SET hours_cm = 99 WHERE id = %s", (credits_off,))
    conn.execute("UPDATE course_units SET credits = 99 WHERE id = %s", (hours_off,))
    assert [
        (
            r["course_unit_id"],
            r["stored_hours_cm"],
            r["expected_hours_cm"],
            r["stored_credits"],
            r["expected_credits"],
        )
        for r in drift_rows(conn)
    ] == [(credits_off, 99, 10, 6, 6), (hours_off, 1, 1, 99, 3)]


def test_expected_view_matches_what_a_sync_writes(conn):
    u = catalogue.unit(conn)
    conn.execute("SET ue_resync.mode = 'off'")
    catalogue.element(conn, u, credits=2, cm=4, td=4, tp=2)
    with conn.cursor(row_factory=dict_row) as cur:
        expected = cur.execute("SELECT * FROM resync.expected WHERE id = %s", (u,)).fetchone()
    assert expected is not None
    conn.execute("SELECT resync.sync_now(%s)", (u,))
    stored = catalogue.read_unit(conn, u)
    for column in (
        "credits",
        "hours_cm",
        "hours_td",
        "hours_tp",
        "hours_total",
        "elements_count",
        "hours_distribution",
    ):
        assert stored[column] == expected[column], column
    assert expected["hours_distribution"] == {"cm": 40.0, "td": 40.0, "tp": 20.0}


# --- validation warnings ---------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "credits": 6,
    "hours_cm": 60,
    "hours_td": 30,
    "hours_tp": 30,
    "hours_total": 120,
    "elements_count": 3,
}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, []),
        (
            {"credits": Decimal("6.5"), "hours_total": 130, "hours_cm": 65},
            [("credits_above_max", "6.50 ECTS credits (at most 6 expected)")],
        ),
        (
            {"hours_total": 84, "hours_cm": 42},
            [("hours_per_credit_out_of_range", "14.0 hours per credit (15 to 35 expected)")],
        ),
        ({"hours_total": 90, "hours_cm": 45}, []),  # 15 per credit: inside
        ({"hours_total": 210, "hours_cm": 105}, []),  # 35 per credit: inside
        (
            {"hours_total": 213, "hours_cm": 106.5},
            [("hours_per_credit_out_of_range", "35.5 hours per credit (15 to 35 expected)")],
        ),
        (
            {"hours_cm": 85},
            [("cm_share_out_of_range", "CM is 70.8 % of the hours (30 to 70 % expected)")],
        ),
        (
            {"hours_cm": 35},
            [("cm_share_out_of_range", "CM is 29.2 % of the hours (30 to 70 % expected)")],
        ),
        ({"hours_cm": 84}, []),  # 70 %: inside
        ({"hours_cm": 36}, []),  # 30 %: inside
        ({"hours_cm": 0}, []),  # no CM at all: not checked
        ({"elements_count": 7}, [("too_many_elements", "7 active elements (at most 6 expected)")]),
        ({"elements_count": 6}, []),
        ({"elements_count": 0}, [("no_elements", "no active element")]),
        (
            {"credits": 8, "hours_cm": 100, "hours_total": 100, "elements_count": 0},
            [
                ("cm_share_out_of_range", "CM is 100.0 % of the hours (30 to 70 % expected)"),
                ("credits_above_max", "8.00 ECTS credits (at most 6 expected)"),
                ("hours_per_credit_out_of_range", "12.5 hours per credit (15 to 35 expected)"),
                ("no_elements", "no active element"),
            ],
        ),
    ],
)
def test_validation_warnings_on_stored_values(conn, changes, expected):
    u = catalogue.unit(conn, auto_sync_enabled=False, **{**GOOD, **changes})
    assert warnings_of(conn, u) == expected


def test_validation_warnings_follow_real_elements(conn):
    u = catalogue.unit(conn)
    assert warnings_of(conn, u) == [("no_elements", "no active element")]
    for _ in range(7):
        catalogue.element(conn, u, credits=1, cm=10, td=5, tp=5)
    assert warnings_of(conn, u) == [
        ("credits_above_max", "7.00 ECTS credits (at most 6 expected)"),
        ("too_many_elements", "7 active elements (at most 6 expected)"),
    ]
    row = conn.execute(
        "SELECT code FROM resync.validation_warnings WHERE course_unit_id = %s LIMIT 1", (u,)
    ).fetchone()
    assert row is not None and row[0] == catalogue.read_unit(conn, u)["code"]
