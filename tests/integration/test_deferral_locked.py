"""A UE row locked by another session: the writer does not wait for it, commits, and the queue
gets one job for the UE (sql/definitions/element_triggers.sql); a rollback leaves nothing behind."""

from __future__ import annotations

import datetime as dt

import pytest
from psycopg import errors

from support import catalogue
from tests.deferral import (
    failures,
    one_job,
)


def test_writer_does_not_wait_for_a_locked_unit_and_queues_a_job(conn, locked_unit):
    u, e, holder = locked_unit
    notices: list[tuple[str | None, str | None]] = []
    # A Diagnostic is only valid inside the callback: copy what we check.
    conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    conn.execute("SET ue_resync.lock_timeout = '50ms'")
    # Had the trigger waited for the lock without its own lock_timeout, this would end the
    # wait, and the job would carry 57014 instead of 55P03.
    conn.execute("SET statement_timeout = '30s'")

    conn.execute("UPDATE course_unit_elements SET hours_cm = 30 WHERE id = %s", (e,))

    # The writer is back while the row is still locked: it did not wait for the holder.
    with pytest.raises(errors.LockNotAvailable):
        conn.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE NOWAIT", (u,))
    # The write is committed (autocommit) and visible to another session.
    assert (
        holder.execute("SELECT hours_cm FROM course_unit_elements WHERE id = %s", (e,)).fetchone()[
            0
        ]
        == 30
    )
    job = one_job(conn, u)
    assert job["payload"]["reason"] == "sync_error_after_updated"
    assert job["headers"]["reason"] == "sync_error_after_updated"
    assert job["events"] == 1
    assert job["payload"]["sqlstate"] == "55P03"
    assert job["payload"]["error"] == "canceling statement due to lock timeout"
    assert job["delay"] == dt.timedelta(minutes=2)
    assert failures(conn) == [(u, "updated", "sync_error_after_updated", "55P03", job["id"])]
    # The unit was not touched, so it drifts until the job runs.
    assert catalogue.totals(conn, u) == (3, 10, 5, 5, 20, 1)
    drifted = conn.execute("SELECT course_unit_id FROM resync.drift").fetchall()
    assert drifted == [(u,)]
    assert notices == [
        (
            "WARNING",
            "ue-resync: sync of 1 course unit(s) failed (55P03: canceling statement due "
            "to lock timeout); resync queued in 00:02:00",
        ),
    ]


def test_writer_rolling_back_leaves_no_job_and_no_failure(conn, locked_unit):
    u, e, _ = locked_unit
    conn.execute("SET ue_resync.lock_timeout = '50ms'")
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE course_unit_elements SET hours_cm = 30 WHERE id = %s", (e,))
        assert len(catalogue.jobs(conn, u)) == 1  # queued inside the writer's transaction
        assert len(failures(conn)) == 1
    assert catalogue.jobs(conn) == []
    assert failures(conn) == []
    assert (
        conn.execute("SELECT hours_cm FROM course_unit_elements WHERE id = %s", (e,)).fetchone()[0]
        == 10
    )


def test_one_locked_unit_defers_the_whole_statement(conn, locked_unit):
    """The statement's units are synced together: one busy unit defers all of them."""
    u, _, _ = locked_unit
    others = [catalogue.unit(conn), catalogue.unit(conn)]
    for o in others:
        catalogue.element(conn, o, credits=1)
    conn.execute("SET ue_resync.lock_timeout = '50ms'")
    conn.execute("UPDATE course_unit_elements SET credits = 2")
    units = sorted([u, *others])
    assert [j["payload"]["course_unit_id"] for j in catalogue.jobs(conn)] == units
    assert [(f[0], f[3]) for f in failures(conn)] == [(x, "55P03") for x in units]
    assert all(catalogue.totals(conn, o)[0] == 1 for o in others)
