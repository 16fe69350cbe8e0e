"""When the inline sync cannot run (UE row locked, statement timeout, deadlock), when it is switched
to deferred or off, and when a statement touches thousands of elements: the writer always commits,
and the queue gets exactly the jobs the error policy asks for
(sql/definitions/element_triggers.sql)."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests import catalog

# --- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def session(dsn: str, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=autocommit) as connection:
        yield connection


def lock_waiting(observer: psycopg.Connection, pid: int) -> bool:
    row = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
        (pid,),
    ).fetchone()
    return bool(row and row[0])


def wait_until_blocked(observer: psycopg.Connection, pid: int) -> None:
    catalog.wait_for(lambda: lock_waiting(observer, pid), what=f"backend {pid} to wait on a lock")


class Worker(threading.Thread):
    """A thread that runs `fn`, keeping its exception for the main thread."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.error: BaseException | None = None
        self.result: Any = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the main thread by finish()
            self.error = exc

    def finish(self, timeout: float = 15.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "worker thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def failures(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT course_unit_id, action, reason, sqlstate, job_id FROM resync.sync_failures "
        "ORDER BY id"
    ).fetchall()


def seconds(delta: dt.timedelta) -> float:
    return delta.total_seconds()


def one_job(conn: psycopg.Connection, unit_id: int) -> dict[str, Any]:
    found = catalog.jobs(conn)
    assert len(found) == 1, found
    job = found[0]
    assert job["headers"]["course_unit_id"] == str(unit_id)
    assert job["payload"]["course_unit_id"] == unit_id
    assert job["status"] == "queued"
    return job


def stat_updates(conn: psycopg.Connection) -> int:
    """n_tup_upd of course_units, with this backend's pending counters flushed first."""
    conn.execute("SELECT pg_stat_force_next_flush()")  # flushed when this backend goes idle
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'public.course_units'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0])


# --- UE row locked by another session --------------------------------------------------------


@pytest.fixture
def locked_unit(conn, dsn):
    """A unit with one element (credits 3, 10/5/5), its row held FOR UPDATE by session B."""
    u = catalog.unit(conn)
    e = catalog.element(conn, u, credits=3, cm=10, td=5, tp=5)
    with session(dsn) as holder:
        holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
        yield u, e, holder
        holder.rollback()


def test_writer_does_not_wait_for_a_locked_unit_and_queues_a_job(conn, locked_unit):
    u, e, holder = locked_unit
    notices: list[tuple[str | None, str | None]] = []
    # A Diagnostic is only valid inside the callback: copy what we check.
    conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    conn.execute("SET ue_resync.lock_timeout = '50ms'")

    started = time.monotonic()
    conn.execute("UPDATE course_unit_elements SET hours_cm = 30 WHERE id = %s", (e,))
    elapsed = time.monotonic() - started

    assert elapsed < 0.5, f"the writer waited {elapsed:.3f} s"
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
    assert 115 < seconds(job["due_in"]) <= 120
    assert failures(conn) == [(u, "updated", "sync_error_after_updated", "55P03", job["id"])]
    # The unit was not touched, so it drifts until the job runs.
    assert catalog.totals(conn, u) == (3, 10, 5, 5, 20, 1)
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
        assert len(catalog.jobs(conn, u)) == 1  # queued inside the writer's transaction
        assert len(failures(conn)) == 1
    assert catalog.jobs(conn) == []
    assert failures(conn) == []
    assert (
        conn.execute("SELECT hours_cm FROM course_unit_elements WHERE id = %s", (e,)).fetchone()[0]
        == 10
    )


def test_one_locked_unit_defers_the_whole_statement(conn, locked_unit):
    """The statement's units are synced together: one busy unit defers all of them."""
    u, _, _ = locked_unit
    others = [catalog.unit(conn), catalog.unit(conn)]
    for o in others:
        catalog.element(conn, o, credits=1)
    conn.execute("SET ue_resync.lock_timeout = '50ms'")
    conn.execute("UPDATE course_unit_elements SET credits = 2")
    units = sorted([u, *others])
    assert [j["payload"]["course_unit_id"] for j in catalog.jobs(conn)] == units
    assert [(f[0], f[3]) for f in failures(conn)] == [(x, "55P03") for x in units]
    assert all(catalog.totals(conn, o)[0] == 1 for o in others)


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
    assert 3 < seconds(job["due_in"]) <= 5
    assert failures(conn) == [(u, "updated", "lock_busy_after_updated", "55P03", job["id"])]


def test_policy_without_auto_resync_records_the_failure_only(conn, locked_unit):
    u, e, _ = locked_unit
    conn.execute(
        "INSERT INTO resync.error_policy (sqlstate_pattern, reason_prefix, auto_resync) "
        "VALUES ('55', 'object_busy', false)"
    )
    conn.execute("SET ue_resync.lock_timeout = '50ms'")
    conn.execute("UPDATE course_unit_elements SET deleted_at = now() WHERE id = %s", (e,))
    assert catalog.jobs(conn) == []
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


def test_statement_timeout_inside_the_sync_is_caught(conn, locked_unit):
    u, e, _ = locked_unit
    conn.execute("SET statement_timeout = '100ms'")
    conn.execute("SET ue_resync.lock_timeout = '5s'")
    started = time.monotonic()
    conn.execute("UPDATE course_unit_elements SET hours_tp = 7 WHERE id = %s", (e,))
    elapsed = time.monotonic() - started
    conn.execute("RESET statement_timeout")

    assert elapsed < 1.0, f"the writer waited {elapsed:.3f} s"
    assert (
        conn.execute("SELECT hours_tp FROM course_unit_elements WHERE id = %s", (e,)).fetchone()[0]
        == 7
    )
    job = one_job(conn, u)
    assert job["payload"]["sqlstate"] == "57014"
    assert job["payload"]["reason"] == "sync_error_after_updated"
    assert 115 < seconds(job["due_in"]) <= 120
    assert failures(conn) == [(u, "updated", "sync_error_after_updated", "57014", job["id"])]


def test_lock_timeout_of_the_session_is_restored_after_the_sync(conn):
    u = catalog.unit(conn)
    e = catalog.element(conn, u)
    conn.execute("SET lock_timeout = '7s'")
    conn.execute("SET ue_resync.lock_timeout = '50ms'")
    with conn.transaction():
        conn.execute("UPDATE course_unit_elements SET credits = 1 WHERE id = %s", (e,))
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "7s"
    assert conn.execute("SHOW lock_timeout").fetchone()[0] == "7s"


# --- a real deadlock -------------------------------------------------------------------------


def test_deadlock_between_two_writers_defers_one_sync(conn, dsn):
    x, y = catalog.unit(conn), catalog.unit(conn)
    ex = catalog.element(conn, x, credits=1, cm=1, td=1, tp=1)
    ey = catalog.element(conn, y, credits=2, cm=2, td=2, tp=2)

    with session(dsn) as s1, session(dsn) as s2:
        for s in (s1, s2):
            s.execute("SET deadlock_timeout = '20ms'")
            s.execute("SET ue_resync.lock_timeout = '5s'")
            s.commit()
        s1.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (x,))
        s2.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (y,))

        def write(s: psycopg.Connection, element_id: int) -> float:
            started = time.monotonic()
            s.execute("UPDATE course_unit_elements SET hours_cm = 50 WHERE id = %s", (element_id,))
            s.commit()
            return time.monotonic() - started

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
    found = catalog.jobs(conn)
    assert len(found) == 1, found
    job = found[0]
    victim = job["payload"]["course_unit_id"]
    assert victim in (x, y)
    assert job["payload"]["reason"] == "deadlock_recovery_after_updated"
    assert job["payload"]["sqlstate"] == "40P01"
    assert 25 < seconds(job["due_in"]) <= 30
    assert failures(conn) == [
        (victim, "updated", "deadlock_recovery_after_updated", "40P01", job["id"])
    ]
    # The other unit was synced inline; the victim still drifts.
    survivor = y if victim == x else x
    assert catalog.totals(conn, survivor)[1] == 50
    assert conn.execute("SELECT course_unit_id FROM resync.drift").fetchall() == [(victim,)]


# --- bulk statements -------------------------------------------------------------------------

UNITS = 2500
PER_UNIT = 4


def _bulk_units(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO course_units (code, name) "
        "SELECT 'B' || i, 'bulk ' || i FROM generate_series(1, %s) i",
        (UNITS,),
    )


def _bulk_elements(conn: psycopg.Connection) -> None:
    """PER_UNIT elements per unit, element k: credits k, hours k/2/3, total k+5."""
    conn.execute(
        "INSERT INTO course_unit_elements "
        "    (course_unit_id, code, name, credits, hours_cm, hours_td, hours_tp, hours_total) "
        "SELECT u.id, 'E' || u.id || '_' || k, 'e', k, k, 2, 3, k + 5 "
        "FROM course_units u CROSS JOIN generate_series(1, %s) k",
        (PER_UNIT,),
    )


def _sample(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT credits, hours_cm, hours_td, hours_tp, hours_total, elements_count, "
        "       count(*) "
        "FROM course_units GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1"
    ).fetchall()


def test_bulk_insert_syncs_every_unit_once(conn):
    _bulk_units(conn)
    before = stat_updates(conn)
    _bulk_elements(conn)
    assert stat_updates(conn) - before == UNITS
    assert catalog.drift_count(conn) == 0
    assert _sample(conn) == [(10, 10, 8, 12, 30, 4, UNITS)]
    assert catalog.jobs(conn) == []


def test_bulk_update_of_10000_elements_syncs_every_unit_once(conn):
    _bulk_units(conn)
    _bulk_elements(conn)
    before = stat_updates(conn)
    status = conn.execute(
        "UPDATE course_unit_elements SET hours_td = hours_td + 1, credits = credits * 2"
    ).rowcount
    assert status == UNITS * PER_UNIT
    assert stat_updates(conn) - before == UNITS
    assert catalog.drift_count(conn) == 0
    assert _sample(conn) == [(20, 10, 12, 12, 30, 4, UNITS)]
    assert catalog.jobs(conn) == []


def test_bulk_move_syncs_source_and_target_once(conn):
    _bulk_units(conn)
    _bulk_elements(conn)
    before = stat_updates(conn)
    # Element 1 of every odd unit moves to the next unit: every unit is touched once.
    moved = conn.execute(
        "UPDATE course_unit_elements e SET course_unit_id = e.course_unit_id + 1 "
        "FROM (SELECT min(id) AS first FROM course_units) m "
        "WHERE (e.course_unit_id - m.first) % 2 = 0 AND e.code LIKE '%\\_1'"
    ).rowcount
    assert moved == UNITS // 2
    assert stat_updates(conn) - before == UNITS
    assert catalog.drift_count(conn) == 0
    assert _sample(conn) == [
        (9, 9, 6, 9, 24, 3, UNITS // 2),
        (11, 11, 10, 15, 36, 5, UNITS // 2),
    ]


def test_bulk_delete_syncs_every_unit_once(conn):
    _bulk_units(conn)
    _bulk_elements(conn)
    before = stat_updates(conn)
    deleted = conn.execute("DELETE FROM course_unit_elements WHERE credits >= 3").rowcount
    assert deleted == UNITS * 2
    assert stat_updates(conn) - before == UNITS
    assert catalog.drift_count(conn) == 0
    assert _sample(conn) == [(3, 3, 4, 6, 13, 2, UNITS)]


# --- ue_resync.mode --------------------------------------------------------------------------


def test_deferred_mode_queues_one_job_per_unit_due_now(conn):
    a, b, off = catalog.unit(conn), catalog.unit(conn), catalog.unit(conn, auto_sync_enabled=False)
    for u in (a, b, off):
        catalog.element(conn, u, credits=1)
        catalog.element(conn, u, credits=1)
    conn.execute("SET ue_resync.mode = 'deferred'")

    conn.execute("UPDATE course_unit_elements SET credits = 2")

    assert catalog.totals(conn, a)[0] == 2 and catalog.totals(conn, b)[0] == 2  # not synced
    found = catalog.jobs(conn)
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
    u = catalog.unit(conn)
    catalog.element(conn, u)
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute(statement, {"u": u})
    job = one_job(conn, u)
    assert job["payload"]["reason"] == reason


def test_restore_reports_restored(conn):
    u = catalog.unit(conn)
    e = catalog.element(conn, u, deleted_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute("UPDATE course_unit_elements SET deleted_at = NULL WHERE id = %s", (e,))
    assert one_job(conn, u)["payload"]["reason"] == "deferred_after_restored"


def test_deferred_mode_bulk_queues_one_job_per_unit(conn):
    _bulk_units(conn)
    _bulk_elements(conn)
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute("UPDATE course_unit_elements SET hours_cm = hours_cm + 1")
    assert conn.execute(
        "SELECT count(*), count(DISTINCT headers ->> 'course_unit_id'), "
        "       count(*) FILTER (WHERE headers ->> 'reason' = 'deferred_after_updated') "
        "FROM resync.pgqueuer"
    ).fetchone() == (UNITS, UNITS, UNITS)
    assert catalog.drift_count(conn) == UNITS


def test_off_mode_does_nothing_and_enqueue_drifted_catches_up(conn):
    a, b, c = catalog.unit(conn), catalog.unit(conn), catalog.unit(conn)
    disabled = catalog.unit(conn, auto_sync_enabled=False)
    for u in (a, b, c, disabled):
        catalog.element(conn, u, credits=1, cm=2, td=2, tp=2)
    conn.execute("SET ue_resync.mode = 'off'")

    conn.execute(
        "UPDATE course_unit_elements SET credits = 5 WHERE course_unit_id = ANY(%s)",
        ([a, c, disabled],),
    )

    assert catalog.jobs(conn) == []
    assert catalog.totals(conn, a)[0] == 1
    assert conn.execute(
        "SELECT course_unit_id, stored_credits, expected_credits FROM resync.drift ORDER BY 1"
    ).fetchall() == [(a, 1, 5), (c, 1, 5)]

    assert conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0] == 2
    found = catalog.jobs(conn)
    assert [j["payload"]["course_unit_id"] for j in found] == [a, c]
    assert {j["payload"]["reason"] for j in found} == {"drift_detected"}
    assert all(-5 < seconds(j["due_in"]) <= 0 for j in found)
    # A second sweep coalesces into the queued jobs.
    assert conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0] == 2
    assert [j["events"] for j in catalog.jobs(conn)] == [2, 2]


def test_enqueue_drifted_with_no_drift_queues_nothing(conn):
    u = catalog.unit(conn)
    catalog.element(conn, u)
    assert conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0] == 0
    assert catalog.jobs(conn) == []


def test_a_sweep_that_queues_many_jobs_analyses_the_queue(conn):
    # pgqueuer's dequeue, planned on the statistics of a small queue, reads every due job at
    # each pick; a sweep of 1,000 jobs or more refreshes them (sql/0013).
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
    u = catalog.unit(conn)
    e = catalog.element(conn, u, credits=1)
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
    assert catalog.jobs(conn) == []


def test_mode_set_local_applies_to_one_transaction(conn):
    u = catalog.unit(conn)
    e = catalog.element(conn, u, credits=1)
    with conn.transaction():
        conn.execute("SET LOCAL ue_resync.mode = 'deferred'")
        conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
    assert catalog.totals(conn, u)[0] == 1
    assert len(catalog.jobs(conn)) == 1
    conn.execute("UPDATE course_unit_elements SET credits = 3 WHERE id = %s", (e,))
    assert catalog.totals(conn, u)[0] == 3
    assert len(catalog.jobs(conn)) == 1


# --- coalescing ------------------------------------------------------------------------------


def test_second_event_coalesces_into_the_queued_job(conn):
    u = catalog.unit(conn)
    e = catalog.element(conn, u, credits=1)
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
    u = catalog.unit(conn)
    e = catalog.element(conn, u, credits=1)
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
    u = catalog.unit(conn)
    e = catalog.element(conn, u, credits=1)
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
    running = one_job(conn, u)["id"]
    conn.execute("UPDATE resync.pgqueuer SET status = 'picked' WHERE id = %s", (running,))

    conn.execute("UPDATE course_unit_elements SET credits = 3 WHERE id = %s", (e,))
    conn.execute("UPDATE course_unit_elements SET credits = 4 WHERE id = %s", (e,))

    found = catalog.jobs(conn, u)
    assert [(j["id"] == running, j["status"], j["events"]) for j in found] == [
        (True, "picked", 1),
        (False, "queued", 2),
    ]


def test_two_sessions_enqueuing_the_same_unit_end_with_one_job(conn, dsn):
    u = catalog.unit(conn)
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


def test_a_malformed_lock_timeout_is_the_writers_error(conn):
    u = catalog.unit(conn)
    e = catalog.element(conn, u, credits=1)
    conn.execute("SET ue_resync.lock_timeout = 'abc'")
    with pytest.raises(errors.InvalidParameterValue, match="lock_timeout"):
        conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
    conn.execute("RESET ue_resync.lock_timeout")
    assert catalog.jobs(conn) == []
    assert catalog.totals(conn, u)[0] == 1


def test_the_writers_lock_timeout_is_restored_after_the_trigger(conn):
    u = catalog.unit(conn)
    e = catalog.element(conn, u, credits=1)
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '7s'")
        conn.execute("SET LOCAL ue_resync.lock_timeout = '20ms'")
        conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "7s"
