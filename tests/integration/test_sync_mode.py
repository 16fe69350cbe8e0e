"""ue_resync.mode: `deferred` queues one job per UE instead of syncing inline, `off` does
nothing (resync.enqueue_drifted catches up later), anything else is a clear error; SET LOCAL
confines it to one transaction."""

from __future__ import annotations

import datetime as dt

import pytest
from psycopg import errors

from support import catalogue
from tests.deferral import (
    UNITS,
    bulk_elements,
    bulk_units,
    failures,
    one_job,
    seconds,
)


def test_deferred_mode_queues_one_job_per_unit_due_now(conn):
    a, b, off = (
        catalogue.unit(conn),
        catalogue.unit(conn),
        catalogue.unit(conn, auto_sync_enabled=False),
    )
    for u in (a, b, off):
        catalogue.element(conn, u, credits=1)
        catalogue.element(conn, u, credits=1)
    conn.execute("SET ue_resync.mode = 'deferred'")

    conn.execute("UPDATE course_unit_elements SET credits = 2")

    assert catalogue.totals(conn, a)[0] == 2 and catalogue.totals(conn, b)[0] == 2  # not synced
    found = catalogue.jobs(conn)
    assert [j["payload"]["course_unit_id"] for j in found] == [a, b]
    for j in found:
        assert j["payload"]["reason"] == "deferred_after_updated"
        assert j["payload"]["sqlstate"] is None
        assert j["events"] == 1
        assert -5 < seconds(j["due_in"]) <= 0
    assert failures(conn) == []


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        (
            "INSERT INTO course_unit_elements (course_unit_id, code, name) "
            "VALUES (%(u)s, 'N', 'n')",
            "deferred_after_created",
        ),
        (
            "UPDATE course_unit_elements SET deleted_at = now() WHERE course_unit_id = %(u)s",
            "deferred_after_deleted",
        ),
        (
            "DELETE FROM course_unit_elements WHERE course_unit_id = %(u)s",
            "deferred_after_force_deleted",
        ),
    ],
)
def test_deferred_mode_reason_names_the_action(conn, statement, reason):
    u = catalogue.unit(conn)
    catalogue.element(conn, u)
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute(statement, {"u": u})
    job = one_job(conn, u)
    assert job["payload"]["reason"] == reason


def test_restore_reports_restored(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, deleted_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute("UPDATE course_unit_elements SET deleted_at = NULL WHERE id = %s", (e,))
    assert one_job(conn, u)["payload"]["reason"] == "deferred_after_restored"


def test_deferred_mode_bulk_queues_one_job_per_unit(conn):
    bulk_units(conn)
    bulk_elements(conn)
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute("UPDATE course_unit_elements SET hours_cm = hours_cm + 1")
    assert conn.execute(
        "SELECT count(*), count(DISTINCT headers ->> 'course_unit_id'), "
        "       count(*) FILTER (WHERE headers ->> 'reason' = 'deferred_after_updated') "
        "FROM resync.pgqueuer"
    ).fetchone() == (UNITS, UNITS, UNITS)
    assert catalogue.drift_count(conn) == UNITS


def test_off_mode_does_nothing_and_enqueue_drifted_catches_up(conn):
    a, b, c = catalogue.unit(conn), catalogue.unit(conn), catalogue.unit(conn)
    disabled = catalogue.unit(conn, auto_sync_enabled=False)
    for u in (a, b, c, disabled):
        catalogue.element(conn, u, credits=1, cm=2, td=2, tp=2)
    conn.execute("SET ue_resync.mode = 'off'")

    conn.execute(
        "UPDATE course_unit_elements SET credits = 5 WHERE course_unit_id = ANY(%s)",
        ([a, c, disabled],),
    )

    assert catalogue.jobs(conn) == []
    assert catalogue.totals(conn, a)[0] == 1
    assert conn.execute(
        "SELECT course_unit_id, stored_credits, expected_credits FROM resync.drift ORDER BY 1"
    ).fetchall() == [(a, 1, 5), (c, 1, 5)]

    assert conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0] == 2
    found = catalogue.jobs(conn)
    assert [j["payload"]["course_unit_id"] for j in found] == [a, c]
    assert {j["payload"]["reason"] for j in found} == {"drift_detected"}
    assert all(-5 < seconds(j["due_in"]) <= 0 for j in found)
    # A second sweep coalesces into the queued jobs.
    assert conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0] == 2
    assert [j["events"] for j in catalogue.jobs(conn)] == [2, 2]


def test_enqueue_drifted_with_no_drift_queues_nothing(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u)
    assert conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0] == 0
    assert catalogue.jobs(conn) == []


def test_a_sweep_that_queues_many_jobs_analyses_the_queue(conn):
    # pgqueuer's dequeue, planned on the statistics of a small queue, reads every due job at
    # each pick; a sweep of 1,000 jobs or more refreshes them (resync.enqueue_drifted in
    # sql/definitions/consistency.sql).
    def reltuples() -> float:
        row = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = 'resync.pgqueuer'::regclass"
        ).fetchone()
        assert row is not None
        return float(row[0])

    def drift(n: int, prefix: str) -> None:
        conn.execute(
            "INSERT INTO course_units (code, name, credits) "
            "SELECT %s || g, 'Drifted ' || g, 1 FROM generate_series(1, %s) g",
            (prefix, n),
        )

    # Only the sweep may analyse the table here (autovacuum runs on the embedded server).
    conn.execute("ALTER TABLE resync.pgqueuer SET (autovacuum_enabled = false)")
    drift(999, "A")
    before = reltuples()
    assert conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0] == 999
    assert reltuples() == before  # fewer than 1,000 jobs: not analysed
    conn.execute("DELETE FROM resync.pgqueuer")
    drift(1, "B")
    assert conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0] == 1000
    assert reltuples() == 1000


def test_invalid_mode_is_a_clear_error(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=1)
    conn.execute("SET ue_resync.mode = 'later'")
    with pytest.raises(errors.InvalidParameterValue) as raised:
        conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
    assert 'invalid value for ue_resync.mode: "later"' in str(raised.value)
    assert raised.value.diag.message_hint == "Use inline, deferred or off."
    conn.execute("RESET ue_resync.mode")
    assert (
        conn.execute("SELECT credits FROM course_unit_elements WHERE id = %s", (e,)).fetchone()[0]
        == 1
    )
    assert catalogue.jobs(conn) == []


def test_mode_set_local_applies_to_one_transaction(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=1)
    with conn.transaction():
        conn.execute("SET LOCAL ue_resync.mode = 'deferred'")
        conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
    assert catalogue.totals(conn, u)[0] == 1
    assert len(catalogue.jobs(conn)) == 1
    conn.execute("UPDATE course_unit_elements SET credits = 3 WHERE id = %s", (e,))
    assert catalogue.totals(conn, u)[0] == 3
    assert len(catalogue.jobs(conn)) == 1
