"""Coalescing and the trailing debounce of deferred-mode events (sql/definitions/queueing.sql).

The checks of due times work inside one transaction, where now() does not move: every due time
and deadline is an exact offset from it. A job's state as if its first event came earlier is
set by hand. Races with the daemon's pick use a second session."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from support import catalogue
from tests.deferral import wait_until_blocked


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
    (found,) = [j for j in catalogue.jobs(conn, unit) if j["status"] == "queued"]
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


@pytest.fixture(params=["row path", "statement path"], autouse=True)
def path(request: pytest.FixtureRequest, conn: psycopg.Connection) -> str:
    """Every case through both writers of the rule: the row function (a single-row statement)
    and resync.enqueue (the statement triggers, which take every statement once the row
    trigger is disabled)."""
    if request.param == "statement path":
        conn.execute(
            "ALTER TABLE course_unit_elements DISABLE TRIGGER course_unit_elements_resync_row"
        )
    return str(request.param)


@pytest.fixture
def hot(conn: psycopg.Connection) -> tuple[int, int]:
    """A UE the daemon has just resynced (sync_now sets last_job_sync), and one element."""
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
    conn.execute("SELECT resync.sync_now(%s)", (u,))
    return u, e


def test_an_isolated_change_is_due_at_once(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
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
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
    conn.execute("SELECT resync.request(%s)", (u,))
    conn.execute("UPDATE resync.pgqueuer SET status = 'picked'")
    with deferred(conn):
        edit(conn, e)
        assert job(conn, u)["due"] == 2 and job(conn, u)["deadline"] == 60


def test_a_change_on_a_unit_with_a_job_queued_for_later_is_due_at_once(conn):
    # issue 2: deferred mode is "delay 0", and coalescing keeps the earliest due time.
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
    conn.execute("SELECT resync.request(%s, 'later', interval '1 hour')", (u,))
    with deferred(conn):
        edit(conn, e)
        assert job(conn, u)["due"] == 0 and job(conn, u)["deadline"] == 60


def test_a_change_joining_a_later_job_while_the_unit_is_resynced_trails(conn):
    # The UE's resync is under way (a job picked) and another job waits for later (a failed
    # sync's 2-minute policy delay): the change joins that job and trails the resync, instead
    # of making it due at once, right behind the running one.
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
    conn.execute("SELECT resync.request(%s)", (u,))
    conn.execute("UPDATE resync.pgqueuer SET status = 'picked'")
    conn.execute("SELECT resync.request(%s, 'later', interval '2 minutes')", (u,))
    with deferred(conn):
        edit(conn, e)
        assert job(conn, u)["due"] == 2 and job(conn, u)["deadline"] == 60


def test_a_change_racing_the_pick_of_the_units_due_job_trails(conn, dsn):
    # The writer's statement sees the UE's job queued and due; the daemon picks it before the
    # insert (the conflict check waits for the pick to commit, then finds no queued job): the
    # event makes a job of its own, which trails the resync under way instead of running
    # right after it.
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
    conn.execute("SELECT resync.request(%s)", (u,))
    with psycopg.connect(dsn) as daemon, psycopg.connect(dsn, autocommit=True) as writer:
        daemon.execute("UPDATE resync.pgqueuer SET status = 'picked'")  # not committed yet
        writer_pid = writer.info.backend_pid
        failure: list[BaseException] = []

        def write() -> None:
            try:
                with deferred(writer):
                    edit(writer, e)
            except BaseException as exc:  # reported below
                failure.append(exc)

        t = threading.Thread(target=write)
        t.start()
        wait_until_blocked(conn, writer_pid, "the writer's insert waiting for the pick")
        daemon.commit()
        t.join(timeout=30)
        assert not t.is_alive() and failure == []
    queued = [j for j in catalogue.jobs(conn, u) if j["status"] == "queued"]
    assert len(queued) == 1
    assert queued[0]["delay"] == dt.timedelta(seconds=2)  # a debounce from the writer's now()


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
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
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
        assert job(conn, u) == {
            "due": -1,
            "deadline": None,
            "events": 2,
            "last_reason": "deferred_after_updated",
        }


@pytest.mark.parametrize("rows", [1, 2], ids=["row path", "statement path"])
def test_both_paths_only_count_an_event_into_a_due_job(conn, rows):
    # A due job only counts the event: its due time and deadline stay.
    u = catalogue.unit(conn)
    elements = [catalogue.element(conn, u) for _ in range(rows)]
    conn.execute("SELECT resync.request(%s, 'ops', interval '30 seconds')", (u,))
    with deferred(conn):
        conn.execute(
            "UPDATE resync.pgqueuer SET execute_after = now() - interval '1 s', "
            "resync_deadline = now() + interval '5 s'"
        )
        conn.execute(
            "UPDATE course_unit_elements SET credits = credits + 1 WHERE id = ANY(%s)",
            (elements,),
        )
        assert job(conn, u) == {
            "due": -1,
            "deadline": 5,
            "events": 2,
            "last_reason": "deferred_after_updated",
        }


@pytest.mark.parametrize("rows", [1, 2], ids=["row path", "statement path"])
def test_a_unit_left_alone_does_not_count_into_its_due_job(conn, rows):
    u = catalogue.unit(conn, auto_sync_enabled=False)
    elements = [catalogue.element(conn, u) for _ in range(rows)]
    conn.execute("SELECT resync.request(%s)", (u,))  # an explicit request still queues
    with deferred(conn):
        conn.execute(
            "UPDATE course_unit_elements SET credits = credits + 1 WHERE id = ANY(%s)",
            (elements,),
        )
        assert job(conn, u)["events"] == 1


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
    other = catalogue.element(conn, u)
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
    assert catalogue.jobs(conn, u) == []


def test_a_coalesced_event_leaves_the_index_entries_alone(conn):
    # Coalescing writes only columns no index reads: a HOT update (same page, no new index
    # entry), as long as the due time does not move.
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
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


def test_plans_made_on_an_empty_queue_still_use_the_index(conn, dsn):
    # The daemon keeps the queue near empty, so a writer's session often plans its queue
    # statements then; those plans are kept. They must not scan the table once an import has
    # queued thousands of jobs: with 10,000 queued, a scan per event made deferred writers
    # 16 times slower (bench/writer_tps --no-commit-wait).
    units = [catalogue.unit(conn) for _ in range(8)]
    elements = [catalogue.element(conn, u) for u in units]
    conn.execute("ANALYZE resync.pgqueuer")  # empty: a plan made now prefers a scan
    with psycopg.connect(dsn, autocommit=True) as writer:
        writer.execute("SET ue_resync.mode = deferred")
        # Enough calls for PL/pgSQL to settle on generic plans, each way taken: a new job and
        # an event into a due job (resync.enqueue with its busy checks).
        for e in elements[:6]:
            edit(writer, e)
            edit(writer, e)
        conn.execute(
            "SELECT resync.enqueue(array_agg(g::bigint), array_agg('filler'::text), interval '0') "
            "FROM generate_series(1000001, 1002000) g"  # 2,000 jobs queued, due
        )
        with writer.transaction():
            edit(writer, elements[6])  # a new job
            edit(writer, elements[6])  # counted into it
            edit(writer, elements[7])
            # Table scans, and rows read through any index (a whole index of queued jobs
            # would be 2,000 at each lookup).
            read = writer.execute(
                "SELECT pg_stat_get_xact_numscans('resync.pgqueuer'::regclass), "
                "       pg_stat_get_xact_tuples_fetched('resync.pgqueuer'::regclass)"
            ).fetchone()
        assert read is not None
        assert read[0] == 0 and read[1] < 20, read
    assert job(conn, units[6])["events"] == 2


def test_the_writers_enable_seqscan_is_left_as_it_was(conn):
    # The row path plans its queue statements with enable_seqscan off, and puts it back.
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
    with deferred(conn):
        edit(conn, e)
        assert conn.execute("SHOW enable_seqscan").fetchone() == ("on",)
        conn.execute("SET LOCAL enable_seqscan = off")
        edit(conn, e)
        assert conn.execute("SHOW enable_seqscan").fetchone() == ("off",)
    assert job(conn, u)["events"] == 2
