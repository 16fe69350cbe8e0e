"""The operator functions of sql/definitions/operator_functions.sql over the queue: retry_failed,
forget_failed, clear_queue, and the daemon's fail_unknown_entrypoints."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors

from support import catalogue


def failed_job(conn: psycopg.Connection, unit_id: int, attempts: int = 4) -> int:
    """A job for the unit that ran out of attempts (as the daemon leaves it)."""
    job_id = conn.execute("SELECT resync.request(%s, 'manual_trigger')", (unit_id,)).fetchone()[0]
    conn.execute(
        "UPDATE resync.pgqueuer SET status = 'failed', attempts = %s, "
        "       queue_manager_id = gen_random_uuid(), execute_after = now() - interval '1 day' "
        "WHERE id = %s",
        (attempts, job_id),
    )
    return int(job_id)


def job_states(conn: psycopg.Connection) -> list[tuple[int, str, str | None]]:
    return [
        (r["id"], r["status"], r["headers"]["course_unit_id"] if r["headers"] else None)
        for r in catalogue.jobs(conn)
    ]


def stable_jobs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The jobs without due_in, which moves with now()."""
    return [{k: v for k, v in j.items() if k != "due_in"} for j in catalogue.jobs(conn)]


def log_of(conn: psycopg.Connection, job_id: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT status::text, entrypoint FROM resync.pgqueuer_log WHERE job_id = %s ORDER BY id",
        (job_id,),
    ).fetchall()


def job(conn: psycopg.Connection, job_id: int) -> dict[str, Any]:
    [found] = [j for j in catalogue.jobs(conn) if j["id"] == job_id]
    return found


def other_job(
    conn: psycopg.Connection, entrypoint: str, due: str = "0", status: str = "queued"
) -> int:
    row = conn.execute(
        "INSERT INTO resync.pgqueuer (priority, entrypoint, status, execute_after, payload) "
        "VALUES (0, %s, %s, now() + %s::interval, convert_to('{}', 'UTF8')) RETURNING id",
        (entrypoint, status, due),
    ).fetchone()
    assert row is not None
    return int(row[0])


# --- retry_failed ----------------------------------------------------------------------------

REQUEUED = ("queued", 0, True, None)


def requeued(conn: psycopg.Connection, job_id: int) -> tuple[Any, ...]:
    """(status, attempts, due at now(), queue_manager_id): read in the transaction that retried
    it, REQUEUED when the job was handed back whole, due at once."""
    row = conn.execute(
        "SELECT status::text, attempts, execute_after = now(), queue_manager_id "
        "FROM resync.pgqueuer WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_retry_failed_one_job(conn):
    a, b = catalogue.unit(conn), catalogue.unit(conn)
    ja, jb = failed_job(conn, a), failed_job(conn, b)

    with conn.transaction():
        assert conn.execute("SELECT resync.retry_failed(%s)", (ja,)).fetchone()[0] == 1
        assert requeued(conn, ja) == REQUEUED
    assert log_of(conn, ja) == [("queued", "resync_course_unit")]
    assert job(conn, jb)["status"] == "failed"  # the other one is left alone
    assert conn.execute("SELECT job_id FROM resync.failed_jobs").fetchall() == [(jb,)]


def test_retry_failed_wakes_the_workers(conn, dsn):
    u = catalogue.unit(conn)
    j = failed_job(conn, u)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN ue_resync")
        conn.execute("SELECT resync.retry_failed(%s)", (j,))
        got = [json.loads(n.payload) for n in listener.notifies(timeout=5.0, stop_after=1)]
    assert len(got) == 1
    assert {k: got[0][k] for k in ("channel", "operation", "table", "type")} == {
        "channel": "ue_resync",
        "operation": "update",
        "table": "pgqueuer",
        "type": "table_changed_event",
    }


def test_retry_failed_all(conn):
    a, b, c = catalogue.unit(conn), catalogue.unit(conn), catalogue.unit(conn)
    ja, jb = failed_job(conn, a), failed_job(conn, b)
    jc = conn.execute("SELECT resync.request(%s, 'x', interval '1 hour')", (c,)).fetchone()[0]

    assert conn.execute("SELECT resync.retry_failed()").fetchone()[0] == 2
    assert conn.execute("SELECT resync.retry_failed(NULL)").fetchone()[0] == 0

    assert job_states(conn) == [
        (ja, "queued", str(a)),
        (jb, "queued", str(b)),
        (jc, "queued", str(c)),
    ]
    assert job(conn, jc)["delay"] == dt.timedelta(hours=1)  # untouched


def test_retry_failed_of_two_jobs_of_one_unit_keeps_one(conn):
    u = catalogue.unit(conn)
    first = failed_job(conn, u)
    failed_job(conn, u)
    assert conn.execute("SELECT resync.retry_failed()").fetchone()[0] == 2
    assert job_states(conn) == [(first, "queued", str(u))]


def test_retry_failed_when_the_unit_already_has_a_queued_job(conn):
    u = catalogue.unit(conn)
    failed = failed_job(conn, u)
    queued = conn.execute("SELECT resync.request(%s, 'later', interval '1 hour')", (u,)).fetchone()[
        0
    ]
    assert queued != failed

    with conn.transaction():
        assert conn.execute("SELECT resync.retry_failed(%s)", (failed,)).fetchone()[0] == 1
        assert requeued(conn, queued) == REQUEUED  # made due now

    assert job_states(conn) == [(queued, "queued", str(u))]


@pytest.mark.parametrize("function", ["retry_failed", "forget_failed"])
def test_unknown_or_not_failed_job_id_is_an_error(conn, function):
    u = catalogue.unit(conn)
    queued = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    failed = failed_job(conn, catalogue.unit(conn))
    before = stable_jobs(conn)
    for bad in (987654, queued):
        with pytest.raises(errors.NoDataFound) as raised:
            conn.execute(f"SELECT resync.{function}(%s)", (bad,))
        assert raised.value.diag.message_primary == f"no failed job with id {bad}"
        assert raised.value.diag.message_hint == "SELECT * FROM resync.failed_jobs"
    assert stable_jobs(conn) == before
    assert job(conn, failed)["status"] == "failed"


# --- forget_failed ---------------------------------------------------------------------------


def test_forget_failed_one_then_all(conn):
    a, b, c, d = (catalogue.unit(conn) for _ in range(4))
    ja, jb, jc = failed_job(conn, a), failed_job(conn, b), failed_job(conn, c)
    jd = conn.execute("SELECT resync.request(%s)", (d,)).fetchone()[0]

    assert conn.execute("SELECT resync.forget_failed(%s)", (jb,)).fetchone()[0] == 1
    assert job_states(conn) == [
        (ja, "failed", str(a)),
        (jc, "failed", str(c)),
        (jd, "queued", str(d)),
    ]
    assert log_of(conn, jb) == [("deleted", "resync_course_unit")]

    assert conn.execute("SELECT resync.forget_failed()").fetchone()[0] == 2
    assert job_states(conn) == [(jd, "queued", str(d))]
    assert conn.execute("SELECT resync.forget_failed()").fetchone()[0] == 0


# --- clear_queue -----------------------------------------------------------------------------


def test_clear_queue_deletes_queued_resyncs_only(conn):
    a, b, c, d = (catalogue.unit(conn) for _ in range(4))
    ja = conn.execute("SELECT resync.request(%s, 'first')", (a,)).fetchone()[0]
    jb = conn.execute("SELECT resync.request(%s, 'second', interval '1 hour')", (b,)).fetchone()[0]
    failed = failed_job(conn, c)
    picked = conn.execute("SELECT resync.request(%s)", (d,)).fetchone()[0]
    conn.execute("UPDATE resync.pgqueuer SET status = 'picked' WHERE id = %s", (picked,))
    foreign = other_job(conn, "send_mail")
    due = dict(conn.execute("SELECT id, execute_after FROM resync.pgqueuer").fetchall())

    cleared = conn.execute("SELECT * FROM resync.clear_queue()").fetchall()

    assert cleared == [(ja, str(a), "first", due[ja]), (jb, str(b), "second", due[jb])]
    assert sorted(j["id"] for j in catalogue.jobs(conn)) == sorted([failed, picked, foreign])
    assert log_of(conn, ja) == [("deleted", "resync_course_unit")]
    assert log_of(conn, jb) == [("deleted", "resync_course_unit")]
    assert conn.execute("SELECT count(*) FROM resync.clear_queue()").fetchone()[0] == 0


# --- fail_unknown_entrypoints ----------------------------------------------------------------


def test_fail_unknown_entrypoints(conn):
    u = catalogue.unit(conn)
    ours = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    stray = other_job(conn, "send_mail")
    later = other_job(conn, "send_mail", due="1 hour")
    worker = uuid.uuid4()

    assert conn.execute("SELECT resync.fail_unknown_entrypoints(%s)", (worker,)).fetchone()[0] == 1
    assert conn.execute("SELECT resync.fail_unknown_entrypoints(%s)", (worker,)).fetchone()[0] == 0

    states = {j["id"]: j["status"] for j in catalogue.jobs(conn)}
    assert states == {ours: "queued", stray: "failed", later: "queued"}
    message = "unknown entrypoint 'send_mail': this queue only runs resync_course_unit"
    [(status, traceback)] = conn.execute(
        "SELECT status::text, traceback FROM resync.pgqueuer_log WHERE job_id = %s", (stray,)
    ).fetchall()
    assert status == "failed"
    assert traceback == {
        "job_id": stray,
        "exception_type": "UnknownEntrypoint",
        "exception_message": message,
    }
    runs = conn.execute(
        "SELECT job_id, course_unit_id, attempt, worker_id, outcome, error, "
        "       finished_at IS NOT NULL FROM resync.job_runs"
    ).fetchall()
    assert runs == [(stray, None, 1, worker, "invalid", message, True)]
    [failed] = conn.execute(
        "SELECT job_id, entrypoint, last_error, attempts FROM resync.failed_jobs"
    ).fetchall()
    assert failed == (stray, "send_mail", message, 1)


def test_retry_failed_of_an_unknown_entrypoint_job(conn):
    """A failed job of another entrypoint is re-queued as it is (no unit to coalesce with)."""
    stray = other_job(conn, "send_mail", due="-1 day", status="failed")
    conn.execute(
        "UPDATE resync.pgqueuer SET attempts = 3, queue_manager_id = gen_random_uuid() "
        "WHERE id = %s",
        (stray,),
    )
    with conn.transaction():
        assert conn.execute("SELECT resync.retry_failed(%s)", (stray,)).fetchone()[0] == 1
        assert requeued(conn, stray) == REQUEUED


def test_retry_failed_logs_what_it_did(conn):
    """A dropped job is logged 'deleted'; a job of another entrypoint keeps its entrypoint."""
    u = catalogue.unit(conn)
    dropped = failed_job(conn, u)
    conn.execute("SELECT resync.request(%s, 'later', interval '1 hour')", (u,))
    stray = other_job(conn, "send_mail", status="failed")
    assert conn.execute("SELECT resync.retry_failed()").fetchone()[0] == 2
    assert log_of(conn, dropped) == [("deleted", "resync_course_unit")]
    assert log_of(conn, stray) == [("queued", "send_mail")]
