"""Coalescing and the trailing debounce of deferred-mode events (sql/0011).

Each test works inside one transaction, where now() does not move: every due time and deadline
is an exact offset from it. A job's state as if its first event came earlier is set by hand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from tests import catalog


@contextmanager
def deferred(conn: psycopg.Connection, **settings: str) -> Iterator[None]:
    """A transaction in deferred mode with the given ue_resync.* settings."""
    with conn.transaction():
        conn.execute("SET LOCAL ue_resync.mode = deferred")
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, true)", (f"ue_resync.{name}", value))
        yield


def edit(conn: psycopg.Connection, element: int) -> None:
    conn.execute("UPDATE course_unit_elements SET credits = credits + 1 WHERE id = %s", (element,))


def job(conn: psycopg.Connection, unit: int) -> dict[str, Any]:
    """The UE's queued job: due and deadline in seconds from now() (deadline None: plain)."""
    (found,) = [j for j in catalog.jobs(conn, unit) if j["status"] == "queued"]
    return {
        "due": found["due_in"].total_seconds(),
        "deadline": None if found["deadline_in"] is None else found["deadline_in"].total_seconds(),
        "events": found["events"],
        "last_reason": found["last_reason"],
    }


def shift(conn: psycopg.Connection, unit: int, due: str, deadline: str | None) -> None:
    """Set the queued job's due time and deadline to now() + the given intervals."""
    conn.execute(
        "UPDATE resync.pgqueuer SET execute_after = now() + %s::interval, "
        "resync_deadline = now() + %s::interval "
        "WHERE headers ->> 'course_unit_id' = %s::text AND status = 'queued'",
        (due, deadline, unit),
    )


@pytest.fixture
def hot(conn: psycopg.Connection) -> tuple[int, int]:
    """A UE the daemon has just resynced (sync_now sets last_job_sync), and one element."""
    u = catalog.unit(conn)
    e = catalog.element(conn, u)
    conn.execute("SELECT resync.sync_now(%s)", (u,))
    return u, e


def test_an_isolated_change_is_due_at_once(conn):
    u = catalog.unit(conn)
    e = catalog.element(conn, u)
    with deferred(conn):
        edit(conn, e)
        assert job(conn, u) == {
            "due": 0,
            "deadline": 60,
            "events": 1,
            "last_reason": "deferred_after_updated",
        }
        edit(conn, e)  # coalesced: still due at once, one more event
        assert job(conn, u) == {
            "due": 0,
            "deadline": 60,
            "events": 2,
            "last_reason": "deferred_after_updated",
        }


def test_a_change_on_a_unit_just_resynced_is_debounced(conn, hot):
    u, e = hot
    with deferred(conn):
        edit(conn, e)
        assert job(conn, u)["due"] == 2  # ue_resync.debounce, default 2s
        assert job(conn, u)["deadline"] == 60  # ue_resync.debounce_max_wait, default 60s


def test_a_change_while_the_daemon_holds_the_unit_is_debounced(conn):
    # The UE was not resynced lately, but a job of it is picked (its resync is under way):
    # the change gets a job of its own (a picked job absorbs nothing), debounced.
    u = catalog.unit(conn)
    e = catalog.element(conn, u)
    conn.execute("SELECT resync.request(%s)", (u,))
    conn.execute("UPDATE resync.pgqueuer SET status = 'picked'")
    with deferred(conn):
        edit(conn, e)
        assert job(conn, u)["due"] == 2 and job(conn, u)["deadline"] == 60


def test_a_change_on_a_unit_with_a_job_waiting_is_debounced(conn):
    # Not resynced lately, nothing picked, but a job queued for later (a request in 2 min):
    # the UE is busy, the change trails. (The same verdict covers the daemon picking the UE's
    # job between the writer's snapshot and its insert: the event then has a job of its own.)
    u = catalog.unit(conn)
    e = catalog.element(conn, u)
    conn.execute("SELECT resync.request(%s, 'later', interval '2 minutes')", (u,))
    with deferred(conn):
        edit(conn, e)
        assert job(conn, u)["due"] == 2 and job(conn, u)["deadline"] == 60


def test_each_debounced_event_pushes_the_due_time_back(conn, hot):
    u, e = hot
    with deferred(conn):
        edit(conn, e)
        shift(conn, u, "0.5 s", "58.5 s")  # as if that event came 1.5 s ago
        edit(conn, e)
        assert job(conn, u) == {
            "due": 2,
            "deadline": 58.5,
            "events": 2,
            "last_reason": "deferred_after_updated",
        }


def test_a_burst_keeps_pushing_its_job_back_once_the_last_resync_is_old(conn):
    # The UE is quiet by its last resync (never), but its job waits for a debounced due time:
    # the burst goes on, so the job is pushed back all the same.
    u = catalog.unit(conn)
    e = catalog.element(conn, u)
    with deferred(conn):
        edit(conn, e)
        shift(conn, u, "1 s", "59 s")
        edit(conn, e)
        assert job(conn, u)["due"] == 2 and job(conn, u)["deadline"] == 59


def test_a_job_already_due_stays_due(conn, hot):
    u, e = hot
    conn.execute("SELECT resync.request(%s)", (u,))
    with deferred(conn):
        conn.execute("UPDATE resync.pgqueuer SET execute_after = now() - interval '1 s'")
        edit(conn, e)
        assert job(conn, u)["due"] == -1 and job(conn, u)["deadline"] == -1


def test_the_deadline_bounds_the_debounce(conn, hot):
    u, e = hot
    with deferred(conn):
        edit(conn, e)
        shift(conn, u, "0.5 s", "1 s")  # first event 59 s ago: one second left
        edit(conn, e)
        assert job(conn, u)["due"] == 1 and job(conn, u)["deadline"] == 1


def test_max_wait_below_the_debounce_wins(conn, hot):
    u, e = hot
    with deferred(conn, debounce="10s", debounce_max_wait="3s"):
        edit(conn, e)
        assert job(conn, u)["due"] == 3 and job(conn, u)["deadline"] == 3


def test_a_plain_event_lowers_the_deadline_and_keeps_the_earliest_due_time(conn, hot):
    u, e = hot
    with deferred(conn):
        edit(conn, e)
        # A failed sync's job (policy delay 30 s) merges: due unchanged, deadline now 30 s.
        conn.execute(
            "SELECT resync.enqueue(array[%s::bigint], array['sync_error_after_updated'], "
            "interval '30 seconds')",
            (u,),
        )
        assert job(conn, u)["due"] == 2 and job(conn, u)["deadline"] == 30
        assert job(conn, u)["last_reason"] == "sync_error_after_updated"
        # Later debounced events cannot push the job past what the plain event asked for.
        conn.execute("SET LOCAL ue_resync.debounce = '45s'")
        edit(conn, e)
        assert job(conn, u)["due"] == 30
        conn.execute("SET LOCAL ue_resync.debounce = '2s'")
        # A request due now makes it due now, for good.
        conn.execute("SELECT resync.request(%s)", (u,))
        edit(conn, e)
        assert job(conn, u) == {
            "due": 0,
            "deadline": 0,
            "events": 5,
            "last_reason": "deferred_after_updated",
        }


def test_a_debounced_event_pulls_a_later_plain_job_forward(conn, hot):
    u, e = hot
    conn.execute("SELECT resync.request(%s, 'later', interval '2 minutes')", (u,))
    with deferred(conn):
        edit(conn, e)
        assert job(conn, u)["due"] == 2 and job(conn, u)["deadline"] == 60
        shift(conn, u, "1 s", "60 s")
        edit(conn, e)  # and from then on it trails like any debounced job
        assert job(conn, u)["due"] == 2


def test_the_statement_path_is_debounced_too(conn, hot):
    u, e = hot
    other = catalog.element(conn, u)
    with deferred(conn):
        conn.execute(
            "UPDATE course_unit_elements SET credits = credits + 1 WHERE id IN (%s, %s)", (e, other)
        )
        assert job(conn, u)["due"] == 2 and job(conn, u)["deadline"] == 60


def test_the_debounce_can_be_turned_off(conn, hot):
    u, e = hot
    with deferred(conn, debounce="0"):
        edit(conn, e)
        assert job(conn, u)["due"] == 0 and job(conn, u)["deadline"] is None


@pytest.mark.parametrize("name", ["debounce", "debounce_max_wait"])
def test_a_malformed_setting_is_the_writers_error(conn, hot, name):
    u, e = hot
    with (
        pytest.raises(psycopg.errors.InvalidDatetimeFormat, match="soon"),
        deferred(conn, **{name: "soon"}),
    ):
        edit(conn, e)
    assert catalog.jobs(conn, u) == []


def test_a_coalesced_event_leaves_the_index_entries_alone(conn):
    # Coalescing writes only columns no index reads: a HOT update (same page, no new index
    # entry), as long as the due time does not move.
    u = catalog.unit(conn)
    e = catalog.element(conn, u)
    with deferred(conn):
        edit(conn, e)
        edit(conn, e)
        edit(conn, e)
        row = conn.execute(
            "SELECT pg_stat_get_xact_tuples_updated('resync.pgqueuer'::regclass), "
            "       pg_stat_get_xact_tuples_hot_updated('resync.pgqueuer'::regclass)"
        ).fetchone()
        assert row == (2, 2)
        assert job(conn, u)["events"] == 3
