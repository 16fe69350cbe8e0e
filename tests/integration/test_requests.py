"""What an operator types in psql (sql/definitions/requests.sql): INSERT INTO resync.requests,
resync.request(), resync.sync_now()."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from support import catalogue


def request_rows(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, course_unit_id, reason, run_at, requested_at, requested_by, job_id, "
            "       run_at - requested_at AS run_in "
            "FROM resync.requests ORDER BY id"
        ).fetchall()


def seconds(delta: dt.timedelta) -> float:
    return delta.total_seconds()


def test_plain_insert_uses_the_defaults_and_queues_a_job_due_now(conn):
    u = catalogue.unit(conn)
    conn.execute("INSERT INTO resync.requests (course_unit_id) VALUES (%s)", (u,))

    [req] = request_rows(conn)
    [job] = catalogue.jobs(conn)
    assert req["course_unit_id"] == u
    assert req["reason"] == "manual_trigger"
    assert req["run_in"] == dt.timedelta(0)
    assert req["requested_by"] == conn.execute("SELECT current_user").fetchone()[0]
    assert req["job_id"] == job["id"]
    assert job["status"] == "queued"
    assert job["payload"]["course_unit_id"] == u
    assert job["payload"]["reason"] == "manual_trigger"
    assert job["payload"]["sqlstate"] is None
    assert job["headers"] == {"course_unit_id": str(u), "reason": "manual_trigger"}
    assert job["events"] == 1 and job["last_reason"] == "manual_trigger"
    assert -5 < seconds(job["due_in"]) <= 0


def test_insert_with_run_at_in_one_hour(conn):
    u = catalogue.unit(conn)
    conn.execute(
        "INSERT INTO resync.requests (course_unit_id, reason, run_at) "
        "VALUES (%s, 'nightly check', now() + interval '1 hour')",
        (u,),
    )
    [job] = catalogue.jobs(conn)
    assert job["payload"]["reason"] == "nightly check"
    assert 3595 < seconds(job["due_in"]) <= 3600


def test_run_at_in_the_past_means_now(conn):
    u = catalogue.unit(conn)
    conn.execute(
        "INSERT INTO resync.requests (course_unit_id, run_at) "
        "VALUES (%s, now() - interval '3 days')",
        (u,),
    )
    [job] = catalogue.jobs(conn)
    assert -5 < seconds(job["due_in"]) <= 0


def test_bulk_insert_select_queues_one_job_per_unit(conn):
    units = [catalogue.unit(conn) for _ in range(5)]
    catalogue.unit(conn, name="not this one")
    conn.execute(
        "INSERT INTO resync.requests (course_unit_id, reason) "
        "SELECT id, 'catalogue import' FROM course_units WHERE name <> 'not this one'"
    )
    reqs = request_rows(conn)
    found = catalogue.jobs(conn)
    assert sorted(r["course_unit_id"] for r in reqs) == units
    assert [j["payload"]["course_unit_id"] for j in found] == units
    by_unit = {j["payload"]["course_unit_id"]: j["id"] for j in found}
    assert all(r["job_id"] == by_unit[r["course_unit_id"]] for r in reqs)


def test_request_coalesces_with_an_existing_job(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
    conn.execute("SET ue_resync.mode = 'deferred'")
    conn.execute("UPDATE course_unit_elements SET credits = 5 WHERE id = %s", (e,))
    [queued] = catalogue.jobs(conn)

    conn.execute(
        "INSERT INTO resync.requests (course_unit_id, reason) VALUES (%s, 'ops'), (%s, 'ops2')",
        (u, u),
    )

    [job] = catalogue.jobs(conn)
    assert job["id"] == queued["id"]
    assert job["events"] == 3
    assert job["last_reason"] == "ops2"
    assert [r["job_id"] for r in request_rows(conn)] == [queued["id"], queued["id"]]


def test_reason_of_exactly_100_characters_is_accepted(conn):
    u = catalogue.unit(conn)
    reason = "a" * 50 + "Z9_.:/ -" + "b" * 42
    assert len(reason) == 100
    conn.execute(
        "INSERT INTO resync.requests (course_unit_id, reason) VALUES (%s, %s)", (u, reason)
    )
    [job] = catalogue.jobs(conn)
    assert job["payload"]["reason"] == reason


@pytest.mark.parametrize(
    ("unit_id", "reason", "error", "message"),
    [
        (
            None,
            "manual_trigger",
            errors.NotNullViolation,
            "resync.requests: course_unit_id is required",
        ),
        (
            999999999,
            "manual_trigger",
            errors.ForeignKeyViolation,
            "resync.requests: course unit 999999999 does not exist",
        ),
        (
            -1,
            "manual_trigger",
            errors.ForeignKeyViolation,
            "resync.requests: course unit -1 does not exist",
        ),
        (
            "UNIT",
            "x" * 101,
            errors.CheckViolation,
            "resync.requests: reason must be 1 to 100 characters, no control character",
        ),
        (
            "UNIT",
            "",
            errors.CheckViolation,
            "resync.requests: reason must be 1 to 100 characters, no control character",
        ),
        (
            "UNIT",
            "line\nbreak",
            errors.CheckViolation,
            "resync.requests: reason must be 1 to 100 characters, no control character",
        ),
        (
            "UNIT",
            None,
            errors.CheckViolation,
            "resync.requests: reason must be 1 to 100 characters, no control character",
        ),
    ],
    ids=[
        "null-id",
        "unknown-id",
        "negative-id",
        "reason-101",
        "reason-empty",
        "reason-newline",
        "reason-null",
    ],
)
def test_bad_request_is_a_clear_error_and_queues_nothing(conn, unit_id, reason, error, message):
    u = catalogue.unit(conn)
    if unit_id == "UNIT":
        unit_id = u
    with pytest.raises(error) as raised:
        conn.execute(
            "INSERT INTO resync.requests (course_unit_id, reason) VALUES (%s, %s)",
            (unit_id, reason),
        )
    assert raised.value.diag.message_primary == message
    assert catalogue.jobs(conn) == []
    assert request_rows(conn) == []


def test_bad_row_in_a_bulk_insert_queues_nothing(conn):
    u = catalogue.unit(conn)
    with pytest.raises(errors.ForeignKeyViolation):
        conn.execute(
            "INSERT INTO resync.requests (course_unit_id) VALUES (%s), (%s)", (u, 999999999)
        )
    assert catalogue.jobs(conn) == []
    assert request_rows(conn) == []


def test_request_function_returns_the_job_id(conn):
    u = catalogue.unit(conn)
    job_id = conn.execute(
        "SELECT resync.request(%s, 'reason', interval '2 minutes')", (u,)
    ).fetchone()[0]
    [job] = catalogue.jobs(conn)
    assert job_id == job["id"]
    assert job["payload"]["reason"] == "reason"
    assert 115 < seconds(job["due_in"]) <= 120
    [req] = request_rows(conn)
    assert (req["course_unit_id"], req["reason"], req["job_id"]) == (u, "reason", job_id)
    assert req["run_in"] == dt.timedelta(minutes=2)


def test_request_function_defaults(conn):
    u = catalogue.unit(conn)
    job_id = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    [job] = catalogue.jobs(conn)
    assert job_id == job["id"]
    assert job["payload"]["reason"] == "manual_trigger"
    assert -5 < seconds(job["due_in"]) <= 0
    # NULL reason and delay fall back to the defaults too.
    assert conn.execute("SELECT resync.request(%s, NULL, NULL)", (u,)).fetchone()[0] == job_id
    assert [r["reason"] for r in request_rows(conn)] == ["manual_trigger", "manual_trigger"]


def test_request_function_for_a_missing_unit_raises(conn):
    with pytest.raises(errors.ForeignKeyViolation, match="course unit 424242 does not exist"):
        conn.execute("SELECT resync.request(424242, 'reason', interval '2 minutes')")
    assert catalogue.jobs(conn) == []


def test_sync_now_returns_what_changed(conn):
    u = catalogue.unit(conn)
    code = catalogue.read_unit(conn, u)["code"]
    conn.execute("SET ue_resync.mode = 'off'")
    catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, u, credits=2, cm=5, td=5, tp=0)
    conn.execute("RESET ue_resync.mode")

    result = conn.execute("SELECT resync.sync_now(%s)", (u,)).fetchone()[0]

    assert result == {
        "course_unit_id": u,
        "code": code,
        "changes": {
            "credits": [0, 5],
            "hours_cm": [0, 15],
            "hours_td": [0, 10],
            "hours_tp": [0, 5],
            "hours_total": [0, 30],
            "elements_count": [0, 2],
            "hours_distribution": [
                {"cm": 0, "td": 0, "tp": 0},
                {"cm": 50.0, "td": 33.3, "tp": 16.7},
            ],
        },
    }
    assert catalogue.totals(conn, u) == (5, 15, 10, 5, 30, 2)
    assert catalogue.jobs(conn) == []


def test_sync_now_on_a_synced_unit_reports_no_change(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=3)
    result = conn.execute("SELECT resync.sync_now(%s)", (u,)).fetchone()[0]
    assert result["changes"] == {}
    assert result["course_unit_id"] == u


def test_sync_now_reports_only_the_columns_that_moved(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    conn.execute("UPDATE course_units SET credits = 4 WHERE id = %s", (u,))
    result = conn.execute("SELECT resync.sync_now(%s)", (u,)).fetchone()[0]
    assert result["changes"] == {"credits": [4, 3]}


def test_sync_now_for_a_missing_unit_is_a_clear_error(conn):
    with pytest.raises(errors.NoDataFound) as raised:
        conn.execute("SELECT resync.sync_now(424242)")
    assert raised.value.diag.message_primary == "resync.sync_now: course unit 424242 does not exist"


@pytest.mark.parametrize(
    "run_at", ["'infinity'::timestamptz", "'9999-01-01'::timestamptz", "now() + interval '2 years'"]
)
def test_a_request_due_never_is_refused(conn, run_at):
    u = catalogue.unit(conn)
    with pytest.raises(errors.InvalidParameterValue, match="more than a year ahead"):
        conn.execute(
            f"INSERT INTO resync.requests (course_unit_id, run_at) VALUES (%s, {run_at})", (u,)
        )
    assert catalogue.jobs(conn) == []


@pytest.mark.parametrize(
    "reason", ["l'import du 12/09", "x'; DROP TABLE course_units; --", "<b>bold</b>", "été 2024"]
)
def test_a_reason_is_any_text_without_control_characters(conn, reason):
    u = catalogue.unit(conn)
    conn.execute(
        "INSERT INTO resync.requests (course_unit_id, reason) VALUES (%s, %s)", (u, reason)
    )
    [job] = catalogue.jobs(conn)
    assert job["payload"]["reason"] == reason and job["headers"]["reason"] == reason
    assert conn.execute("SELECT reason FROM resync.requests").fetchone() == (reason,)


def test_a_negative_delay_is_refused(conn):
    u = catalogue.unit(conn)
    with pytest.raises(errors.InvalidParameterValue, match="delay -00:05:00 is negative"):
        conn.execute("SELECT resync.request(%s, 'r', interval '-5 minutes')", (u,))
    assert catalogue.jobs(conn) == []
