"""resync.error_policy: which SQLSTATE of a failed inline sync queues a job, with what reason
and delay, looked up exact code first, then its class, then the catch-all."""

from __future__ import annotations

import datetime as dt

import pytest

from support import catalogue
from tests.deferral import (
    failures,
    one_job,
)


def test_policy_row_for_the_exact_sqlstate_sets_reason_and_delay(conn, locked_unit):
    u, e, _ = locked_unit
    conn.execute(
        "INSERT INTO resync.error_policy (sqlstate_pattern, reason_prefix, delay) "
        "VALUES ('55P03', 'lock_busy', interval '5 seconds')"
    )
    conn.execute("SET ue_resync.lock_timeout = '50ms'")
    conn.execute("UPDATE course_unit_elements SET credits = 4 WHERE id = %s", (e,))
    job = one_job(conn, u)
    assert job["payload"]["reason"] == "lock_busy_after_updated"
    assert job["delay"] == dt.timedelta(seconds=5)
    assert failures(conn) == [(u, "updated", "lock_busy_after_updated", "55P03", job["id"])]


def test_policy_without_auto_resync_records_the_failure_only(conn, locked_unit):
    u, e, _ = locked_unit
    conn.execute(
        "INSERT INTO resync.error_policy (sqlstate_pattern, reason_prefix, auto_resync) "
        "VALUES ('55', 'object_busy', false)"
    )
    conn.execute("SET ue_resync.lock_timeout = '50ms'")
    conn.execute("UPDATE course_unit_elements SET deleted_at = now() WHERE id = %s", (e,))
    assert catalogue.jobs(conn) == []
    assert failures(conn) == [(u, "deleted", "object_busy_after_deleted", "55P03", None)]


@pytest.mark.parametrize(
    ("rows", "sqlstate", "expected"),
    [
        ([], "55P03", ("sync_error", dt.timedelta(minutes=2), True)),
        ([("55", "klass", "1 second", True)], "55P03", ("klass", dt.timedelta(seconds=1), True)),
        (
            [("55", "klass", "1 second", True), ("55P03", "exact", "3 seconds", False)],
            "55P03",
            ("exact", dt.timedelta(seconds=3), False),
        ),
        (
            [("55", "klass", "1 second", True)],
            "57014",
            ("sync_error", dt.timedelta(minutes=2), True),
        ),
        ([], "40P01", ("deadlock_recovery", dt.timedelta(seconds=30), True)),
        ([], "40001", ("deadlock_recovery", dt.timedelta(seconds=30), True)),
    ],
)
def test_policy_lookup_exact_then_class_then_catch_all(conn, rows, sqlstate, expected):
    for pattern, prefix, delay, auto in rows:
        conn.execute(
            "INSERT INTO resync.error_policy VALUES (%s, %s, %s::interval, %s)",
            (pattern, prefix, delay, auto),
        )
    assert conn.execute("SELECT * FROM resync.policy_for(%s)", (sqlstate,)).fetchall() == [expected]


def test_policy_lookup_without_any_catch_all_row_still_queues(conn):
    conn.execute("DELETE FROM resync.error_policy WHERE sqlstate_pattern = ''")
    assert conn.execute("SELECT * FROM resync.policy_for('XX000')").fetchall() == [
        ("sync_error", dt.timedelta(minutes=2), True)
    ]
