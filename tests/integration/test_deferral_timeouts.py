"""The inline sync under time limits: a statement timeout inside it, a real deadlock between
two writers (each deferred, neither lost), and ue_resync.lock_timeout, which the trigger
applies and then gives the writer's own lock_timeout back."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg import errors

from support import catalogue
from tests.deferral import (
    Worker,
    failures,
    one_job,
    session,
    wait_until_blocked,
)


def test_statement_timeout_inside_the_sync_is_caught(conn, locked_unit):
    u, e, _ = locked_unit
    conn.execute("SET statement_timeout = '100ms'")
    # The holder never lets go: only one of the two limits can end the wait, and the sqlstate
    # below says which (57014 the statement's, 55P03 this one).
    conn.execute("SET ue_resync.lock_timeout = '5s'")
    conn.execute("UPDATE course_unit_elements SET hours_tp = 7 WHERE id = %s", (e,))
    conn.execute("RESET statement_timeout")

    assert (
        conn.execute("SELECT hours_tp FROM course_unit_elements WHERE id = %s", (e,)).fetchone()[0]
        == 7
    )
    job = one_job(conn, u)
    assert job["payload"]["sqlstate"] == "57014"
    assert job["payload"]["reason"] == "sync_error_after_updated"
    assert job["delay"] == dt.timedelta(minutes=2)
    assert failures(conn) == [(u, "updated", "sync_error_after_updated", "57014", job["id"])]


def test_lock_timeout_of_the_session_is_restored_after_the_sync(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
    conn.execute("SET lock_timeout = '7s'")
    conn.execute("SET ue_resync.lock_timeout = '50ms'")
    with conn.transaction():
        conn.execute("UPDATE course_unit_elements SET credits = 1 WHERE id = %s", (e,))
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "7s"
    assert conn.execute("SHOW lock_timeout").fetchone()[0] == "7s"
    # The writer's own SET LOCAL is given back too, and ends with its transaction.
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '3s'")
        conn.execute("SET LOCAL ue_resync.lock_timeout = '20ms'")
        conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "3s"
    assert conn.execute("SHOW lock_timeout").fetchone()[0] == "7s"


def test_a_malformed_lock_timeout_is_the_writers_error(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=1)
    conn.execute("SET ue_resync.lock_timeout = 'abc'")
    with pytest.raises(errors.InvalidParameterValue, match="lock_timeout"):
        conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
    conn.execute("RESET ue_resync.lock_timeout")
    assert catalogue.jobs(conn) == []
    assert catalogue.totals(conn, u)[0] == 1


# -- a real deadlock -----------------------------------------------------------------------------


def test_deadlock_between_two_writers_defers_one_sync(conn, dsn):
    x, y = catalogue.unit(conn), catalogue.unit(conn)
    ex = catalogue.element(conn, x, credits=1, cm=1, td=1, tp=1)
    ey = catalogue.element(conn, y, credits=2, cm=2, td=2, tp=2)

    with session(dsn) as s1, session(dsn) as s2:
        for s in (s1, s2):
            s.execute("SET deadlock_timeout = '20ms'")
            s.execute("SET ue_resync.lock_timeout = '5s'")
            s.commit()
        s1.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (x,))
        s2.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (y,))

        def write(s: psycopg.Connection, element_id: int) -> None:
            s.execute("UPDATE course_unit_elements SET hours_cm = 50 WHERE id = %s", (element_id,))
            s.commit()

        first = Worker(lambda: write(s1, ey))  # waits for y, held by s2
        first.start()
        wait_until_blocked(conn, s1.info.backend_pid)
        second = Worker(lambda: write(s2, ex))  # waits for x, held by s1: a cycle
        second.start()
        first.finish()
        second.finish()

    # Both writes committed.
    assert (
        conn.execute("SELECT count(*) FROM course_unit_elements WHERE hours_cm = 50").fetchone()[0]
        == 2
    )
    # Exactly one sync was the deadlock victim; its unit got the deadlock job.
    found = catalogue.jobs(conn)
    assert len(found) == 1, found
    job = found[0]
    victim = job["payload"]["course_unit_id"]
    assert victim in (x, y)
    assert job["payload"]["reason"] == "deadlock_recovery_after_updated"
    assert job["payload"]["sqlstate"] == "40P01"
    assert job["delay"] == dt.timedelta(seconds=30)
    assert failures(conn) == [
        (victim, "updated", "deadlock_recovery_after_updated", "40P01", job["id"])
    ]
    # The other unit was synced inline; the victim still drifts.
    survivor = y if victim == x else x
    assert catalogue.totals(conn, survivor)[1] == 50
    assert conn.execute("SELECT course_unit_id FROM resync.drift").fetchall() == [(victim,)]
