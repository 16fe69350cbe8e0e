"""Coalescing: a second event for a UE with a job already queued joins that job (keeping the
earliest execute_after), an event while the UE's job runs gets a job of its own, and two
sessions queuing the same UE at once end with one job."""

from __future__ import annotations

from support import catalogue
from tests.deferral import (
    Worker,
    one_job,
    seconds,
    session,
    wait_until_blocked,
)


def test_second_event_coalesces_into_the_queued_job(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=1)
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
    first = one_job(conn, u)
    conn.execute("UPDATE course_unit_elements SET deleted_at = now() WHERE id = %s", (e,))
    conn.execute("UPDATE course_unit_elements SET deleted_at = NULL WHERE id = %s", (e,))
    job = one_job(conn, u)
    assert job["id"] == first["id"]
    assert job["execute_after"] == first["execute_after"]  # earliest kept
    assert job["events"] == 3
    assert job["last_reason"] == "deferred_after_restored"
    assert job["payload"]["reason"] == "deferred_after_updated"  # the first event's payload


def test_coalescing_keeps_the_earliest_execute_after(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=1)
    late = conn.execute("SELECT resync.request(%s, 'later', interval '1 hour')", (u,)).fetchone()[0]
    assert 3595 < seconds(one_job(conn, u)["due_in"]) <= 3600
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
    job = one_job(conn, u)
    assert job["id"] == late
    assert -5 < seconds(job["due_in"]) <= 0  # moved earlier
    # A later request does not push it back.
    assert (
        conn.execute(
            "SELECT resync.request(%s, 'much_later', interval '2 hours')", (u,)
        ).fetchone()[0]
        == late
    )
    job = one_job(conn, u)
    assert -5 < seconds(job["due_in"]) <= 0
    assert job["events"] == 3


def test_event_during_a_running_job_gets_its_own_job(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=1)
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
    running = one_job(conn, u)["id"]
    conn.execute("UPDATE resync.pgqueuer SET status = 'picked' WHERE id = %s", (running,))

    conn.execute("UPDATE course_unit_elements SET credits = 3 WHERE id = %s", (e,))
    conn.execute("UPDATE course_unit_elements SET credits = 4 WHERE id = %s", (e,))

    found = catalogue.jobs(conn, u)
    assert [(j["id"] == running, j["status"], j["events"]) for j in found] == [
        (True, "picked", 1),
        (False, "queued", 2),
    ]


def test_two_sessions_enqueuing_the_same_unit_end_with_one_job(conn, dsn):
    u = catalogue.unit(conn)
    with session(dsn) as s1, session(dsn) as s2:
        first = s1.execute("SELECT resync.request(%s, 'from_s1')", (u,)).fetchone()[0]

        def second_request() -> int:
            job_id = s2.execute("SELECT resync.request(%s, 'from_s2')", (u,)).fetchone()[0]
            s2.commit()
            return int(job_id)

        waiter = Worker(second_request)
        waiter.start()
        wait_until_blocked(conn, s2.info.backend_pid)  # on s1's uncommitted queue row
        s1.commit()
        second = waiter.finish()
    assert second == first
    job = one_job(conn, u)
    assert job["events"] == 2
    assert job["last_reason"] == "from_s2"
    assert conn.execute("SELECT array_agg(job_id ORDER BY id) FROM resync.requests").fetchone()[
        0
    ] == [first, first]
