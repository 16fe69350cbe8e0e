"""resync.alerts and resync.prune_history (sql/definitions/monitoring_views.sql and
operator_functions.sql): each alert fires on the state it is about and not without it; pruning keeps
failures and recent rows. The clock is moved by seeding timestamps in the past, or by pruning with
p_now in the future."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from support import catalogue


def alerts(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT name, severity, value, threshold, detail FROM resync.alerts"
        ).fetchall()


def fired(conn: psycopg.Connection) -> list[str]:
    return [a["name"] for a in alerts(conn)]


def only(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    [alert] = [a for a in alerts(conn) if a["name"] == name]
    return alert


def queue_delayed(conn: psycopg.Connection, n: int) -> list[int]:
    """n queued jobs due in an hour (no due-job alert), for units that need not exist."""
    rows = conn.execute(
        "SELECT job_id FROM resync.enqueue("
        "    array(SELECT 1000000 + g FROM generate_series(1, %(n)s) g)::bigint[],"
        "    array_fill('test'::text, array[%(n)s]), interval '1 hour')",
        {"n": n},
    ).fetchall()
    return [r[0] for r in rows]


def live_worker(conn: psycopg.Connection, heartbeat_age: str = "0", stopped: bool = False) -> None:
    conn.execute(
        "INSERT INTO resync.workers (id, hostname, pid, version, heartbeat_at, stopped_at) "
        "VALUES (%s, 'host-a', 1, 'test', now() - %s::interval, "
        "        CASE WHEN %s THEN now() END)",
        (uuid.uuid4(), heartbeat_age, stopped),
    )


def due_job(conn: psycopg.Connection, waited: str) -> int:
    job = conn.execute("SELECT resync.request(%s)", (catalogue.unit(conn),)).fetchone()[0]
    conn.execute(
        "UPDATE resync.pgqueuer SET execute_after = now() - %s::interval WHERE id = %s",
        (waited, job),
    )
    return job


def unit_failure(
    conn: psycopg.Connection, unit: int, ago: str = "1 hour", outcome: str = "retrying"
) -> None:
    conn.execute(
        "INSERT INTO resync.job_runs (job_id, course_unit_id, attempt, outcome, started_at, "
        "finished_at, error) VALUES (1, %s, 1, %s, now() - %s::interval, now() - %s::interval, "
        "'canceling statement due to statement timeout')",
        (unit, outcome, ago, ago),
    )


def inline_failure(conn: psycopg.Connection, unit: int, sqlstate: str) -> None:
    conn.execute(
        "INSERT INTO resync.sync_failures (course_unit_id, action, reason, sqlstate, error) "
        "VALUES (%s, 'updated', 'sync_error_after_updated', %s, 'numeric field overflow')",
        (unit, sqlstate),
    )


# -- alerts -----------------------------------------------------------------------------------


def test_a_healthy_system_raises_no_alert(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=3)
    live_worker(conn)
    conn.execute("SELECT resync.request(%s, 'later', interval '1 hour')", (u,))
    assert alerts(conn) == []


def test_more_failed_jobs_in_the_last_hour_than_the_threshold(conn):
    jobs = queue_delayed(conn, 12)
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = ANY (%s)", (jobs[:10],))
    # failed two hours ago: not in the last hour
    conn.execute(
        "UPDATE resync.pgqueuer SET status = 'failed', updated = now() - interval '2 hours' "
        "WHERE id = %s",
        (jobs[10],),
    )
    assert "failed_jobs_last_hour" not in fired(conn)

    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (jobs[11],))
    alert = only(conn, "failed_jobs_last_hour")
    assert (alert["severity"], alert["value"], alert["threshold"]) == ("warning", "11", "10")
    assert "resync.failed_jobs" in alert["detail"]

    # retried or forgotten jobs no longer count
    conn.execute("SELECT resync.forget_failed(%s)", (jobs[0],))
    assert "failed_jobs_last_hour" not in fired(conn)


def test_more_queued_jobs_than_the_threshold(conn):
    queue_delayed(conn, 100)
    assert alerts(conn) == []
    conn.execute("SELECT resync.request(%s, 'x', interval '1 hour')", (catalogue.unit(conn),))
    alert = only(conn, "queued_jobs")
    assert (alert["severity"], alert["value"], alert["threshold"]) == ("warning", "101", "100")
    assert alert["detail"] == "101 job(s) queued (0 due, 101 delayed)"


def test_the_same_unit_failing_repeatedly_is_named(conn):
    u = catalogue.unit(conn, code="MATH101")
    v = catalogue.unit(conn, code="PHYS202")
    unit_failure(conn, u, "1 hour")
    unit_failure(conn, u, "2 hours", outcome="failed")
    unit_failure(conn, u, "25 hours")  # outside the 24 hours
    unit_failure(conn, u, "1 hour", outcome="succeeded")
    inline_failure(conn, u, "55P03")  # lock_timeout: what deferral is for, not a failure
    inline_failure(conn, u, "40P01")  # deadlock: likewise
    assert "unit_failures_24h" not in fired(conn)

    inline_failure(conn, u, "22003")  # a real error in the inline sync
    for _ in range(3):
        unit_failure(conn, v, "3 hours", outcome="superseded")
    rows = [a for a in alerts(conn) if a["name"] == "unit_failures_24h"]
    assert [(a["severity"], a["value"], a["threshold"]) for a in rows] == [
        ("warning", "3", "3"),
        ("warning", "3", "3"),
    ]
    assert rows[0]["detail"].startswith(f"UE MATH101 (id {u}) failed 3 times in 24 hours")
    assert rows[0]["detail"].endswith("numeric field overflow")
    assert rows[1]["detail"].startswith(f"UE PHYS202 (id {v}) failed 3 times")


def test_a_successful_sync_after_the_failures_clears_the_unit(conn):
    u = catalogue.unit(conn, code="MATH101")
    for ago in ("3 hours", "2 hours", "1 hour"):
        unit_failure(conn, u, ago)
    assert only(conn, "unit_failures_24h")["value"] == "3"
    # The operator's fix: the UE resynced (ue-resync sync, a retried job, the next write).
    conn.execute("SELECT resync.sync_now(%s)", (u,))
    assert "unit_failures_24h" not in fired(conn)
    assert conn.execute("SELECT * FROM resync.unit_failures()").fetchall() == []
    # A failure after that fix counts again, alone.
    inline_failure(conn, u, "22003")
    assert conn.execute("SELECT failures FROM resync.unit_failures()").fetchall() == [(1,)]


def test_a_due_job_waiting_too_long(conn):
    live_worker(conn)
    due_job(conn, "4 minutes")
    assert alerts(conn) == []
    job = due_job(conn, "6 minutes")
    alert = only(conn, "due_job_wait")
    assert (alert["severity"], alert["threshold"]) == ("critical", "5 minutes")
    assert alert["value"].startswith("00:06:0")
    assert alert["detail"].startswith(f"job {job} (UE id ")
    assert alert["detail"].endswith("1 live worker(s)")


@pytest.mark.parametrize(
    ("worker", "fires"),
    [
        ({}, False),
        ({"heartbeat_age": "25 seconds"}, False),
        ({"heartbeat_age": "1 minute"}, True),
        ({"stopped": True}, True),
        (None, True),
    ],
    ids=["live", "recent-heartbeat", "stale-heartbeat", "stopped", "never"],
)
def test_jobs_due_and_no_live_worker(conn, worker, fires):
    if worker is not None:
        live_worker(conn, **worker)
    conn.execute("SELECT resync.request(%s, 'x', interval '1 hour')", (catalogue.unit(conn),))
    assert alerts(conn) == []  # nothing due: no worker needed
    due_job(conn, "0")
    assert fired(conn) == (["no_live_worker"] if fires else [])
    if fires:
        alert = only(conn, "no_live_worker")
        assert (alert["severity"], alert["value"], alert["threshold"]) == (
            "critical",
            "0",
            "30 seconds",
        )
        assert alert["detail"].startswith("1 job(s) due and no worker heartbeat within 30 seconds")
        assert ("never" in alert["detail"]) == (worker is None)


def test_drift_nobody_is_about_to_repair(conn):
    units = [catalogue.unit(conn, code=f"DR{i}") for i in range(7)]
    conn.execute("SET ue_resync.mode = 'off'")
    for u in units:
        catalogue.element(conn, u, credits=2)
    alert = only(conn, "drift")
    assert (alert["severity"], alert["value"], alert["threshold"]) == ("warning", "7", "0")
    assert "(DR0, DR1, DR2, DR3, DR4, …)" in alert["detail"]
    assert alert["detail"].endswith("ue-resync check --enqueue")

    # a queued resync will repair them: not an alert (a job that never runs raises others)
    conn.execute("SELECT resync.enqueue_drifted()")
    conn.execute("UPDATE resync.pgqueuer SET execute_after = now() + interval '1 minute'")
    assert alerts(conn) == []
    conn.execute("SELECT resync.clear_queue()")
    for u in units[1:]:
        conn.execute("SELECT resync.sync_now(%s)", (u,))
    assert only(conn, "drift")["value"] == "1"
    conn.execute("SELECT resync.sync_now(%s)", (units[0],))
    assert alerts(conn) == []


def test_critical_alerts_come_first(conn):
    queue_delayed(conn, 101)
    due_job(conn, "10 minutes")
    assert [(a["severity"], a["name"]) for a in alerts(conn)] == [
        ("critical", "due_job_wait"),
        ("critical", "no_live_worker"),
        ("warning", "queued_jobs"),
    ]


def test_thresholds_are_settings(conn):
    conn.execute("UPDATE resync.thresholds SET value = '0' WHERE name = 'queued_jobs'")
    conn.execute("UPDATE resync.thresholds SET value = '2 hours' WHERE name = 'due_job_wait'")
    live_worker(conn)
    due_job(conn, "1 hour")
    alert = only(conn, "queued_jobs")
    assert (alert["value"], alert["threshold"]) == ("1", "0")
    assert "due_job_wait" not in fired(conn)

    # a deleted row falls back to its default
    conn.execute("DELETE FROM resync.thresholds WHERE name IN ('queued_jobs', 'due_job_wait')")
    assert fired(conn) == ["due_job_wait"]


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("queued_jobs", "ten", errors.CheckViolation),
        ("queued_jobs", "-1", errors.CheckViolation),
        ("due_job_wait", "soon", errors.InvalidDatetimeFormat),
        ("due_job_wait", "0", errors.CheckViolation),
        ("retention_success", "1 hour", errors.CheckViolation),
    ],
)
def test_a_bad_setting_is_refused_on_write(conn, name, value, error):
    with pytest.raises(error):
        conn.execute("UPDATE resync.thresholds SET value = %s WHERE name = %s", (value, name))


def test_every_setting_has_a_description(conn):
    rows = dict(conn.execute("SELECT name, description FROM resync.thresholds").fetchall())
    assert set(rows) == {
        "failed_jobs_last_hour",
        "queued_jobs",
        "unit_failures_24h",
        "due_job_wait",
        "worker_heartbeat_fresh",
        "retention_success",
        "lmd_credits_max",
        "lmd_hours_per_credit_min",
        "lmd_hours_per_credit_max",
        "lmd_cm_share_min",
        "lmd_cm_share_max",
        "lmd_elements_max",
    }
    assert all(rows.values())


# -- prune_history ----------------------------------------------------------------------------


def counts(conn: psycopg.Connection) -> dict[str, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM resync.job_runs), "
        "       (SELECT count(*) FROM resync.pgqueuer_log), "
        "       (SELECT count(*) FROM resync.pgqueuer_statistics), "
        "       (SELECT count(*) FROM resync.sync_failures), "
        "       (SELECT count(*) FROM resync.workers)"
    ).fetchone()
    assert row is not None
    return dict(zip(["runs", "log", "statistics", "failures", "workers"], row, strict=True))


def seed_history(conn: psycopg.Connection) -> dict[str, Any]:
    """A done job with a full history, a failed job still held, a forgotten failed job, a run
    still open, statistics, inline failures, and the workers that ran them."""
    old_worker, held_worker = uuid.uuid4(), uuid.uuid4()
    for w in (old_worker, held_worker):
        conn.execute(
            "INSERT INTO resync.workers (id, hostname, pid, version, stopped_at) "
            "VALUES (%s, 'host', 1, 'test', now())",
            (w,),
        )
    u = catalogue.unit(conn)
    done = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    held = conn.execute("SELECT resync.request(%s)", (catalogue.unit(conn),)).fetchone()[0]
    forgotten = conn.execute("SELECT resync.request(%s)", (catalogue.unit(conn),)).fetchone()[0]
    running = conn.execute("SELECT resync.request(%s)", (catalogue.unit(conn),)).fetchone()[0]
    runs = [
        (done, "succeeded", old_worker),
        (done, "retrying", old_worker),
        (held, "retrying", held_worker),
        (held, "failed", held_worker),
        (forgotten, "failed", old_worker),
    ]
    for job, outcome, worker in runs:
        conn.execute(
            "INSERT INTO resync.job_runs (job_id, course_unit_id, attempt, outcome, "
            "worker_id, finished_at) VALUES (%s, %s, 1, %s, %s, now())",
            (job, u, outcome, worker),
        )
    conn.execute(
        "INSERT INTO resync.job_runs (job_id, course_unit_id, attempt, worker_id) "
        "VALUES (%s, %s, 1, %s)",
        (running, u, held_worker),
    )
    conn.execute("UPDATE resync.pgqueuer SET status = 'picked' WHERE id = %s", (running,))
    conn.execute(
        "INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority, traceback) "
        "VALUES (%s, 'failed', 'resync_course_unit', 0, '{\"exception_message\": \"boom\"}')",
        (held,),
    )
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (held,))
    conn.execute("DELETE FROM resync.pgqueuer WHERE id IN (%s, %s)", (done, forgotten))
    conn.execute(
        "INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority) "
        "VALUES (%s, 'successful', 'resync_course_unit', 0), "
        "       (%s, 'deleted', 'resync_course_unit', 0)",
        (done, forgotten),
    )
    conn.execute(
        "INSERT INTO resync.pgqueuer_statistics (count, priority, status, entrypoint) "
        "VALUES (3, 0, 'successful', 'resync_course_unit')"
    )
    conn.execute(
        "INSERT INTO resync.sync_failures "
        "    (course_unit_id, action, reason, sqlstate, error, job_id) "
        "VALUES (%s, 'updated', 'sync_error_after_updated', '55P03', 'lock', %s), "
        "       (%s, 'updated', 'sync_error_after_updated', '55P03', 'lock', %s), "
        "       (%s, 'updated', 'sync_error_after_updated', '22003', 'overflow', NULL)",
        (u, done, u, held, u),
    )
    return {"held": held, "running": running, "held_worker": held_worker, "done": done}


def prune(conn: psycopg.Connection, days_ahead: int = 0) -> int:
    """resync.prune_history() as if run `days_ahead` days from now."""
    row = conn.execute(
        "SELECT resync.prune_history(now() + make_interval(days => %s))", (days_ahead,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_prune_keeps_recent_rows(conn):
    seed_history(conn)
    before = counts(conn)
    assert prune(conn) == 0
    assert counts(conn) == before


def test_prune_deletes_old_history_and_keeps_what_a_held_job_needs(conn):
    seeded = seed_history(conn)
    before = counts(conn)
    deleted = prune(conn, 31)
    after = counts(conn)
    assert deleted == sum(before.values()) - sum(after.values())
    assert after == {"runs": 3, "log": 1, "statistics": 0, "failures": 1, "workers": 1}
    kept_runs = conn.execute("SELECT job_id, outcome FROM resync.job_runs ORDER BY id").fetchall()
    assert kept_runs == [
        (seeded["held"], "retrying"),
        (seeded["held"], "failed"),
        (seeded["running"], "running"),
    ]
    # what `ue-resync failed` shows about the held job is intact
    failed = conn.execute("SELECT job_id, last_error, traceback FROM resync.failed_jobs").fetchall()
    assert [(f[0], f[2]) for f in failed] == [(seeded["held"], {"exception_message": "boom"})]
    assert conn.execute("SELECT id FROM resync.workers").fetchone()[0] == seeded["held_worker"]

    # once forgotten, the held job's history goes too (the open run stays)
    conn.execute("SELECT resync.forget_failed(%s)", (seeded["held"],))
    prune(conn, 31)
    assert conn.execute("SELECT outcome FROM resync.job_runs").fetchall() == [("running",)]


def test_prune_honours_the_retention_setting(conn):
    seed_history(conn)
    conn.execute("UPDATE resync.thresholds SET value = '60 days' WHERE name = 'retention_success'")
    before = counts(conn)
    assert prune(conn, 31) == 0
    assert counts(conn) == before
    assert prune(conn, 61) > 0


def test_a_second_prune_at_the_same_time_does_nothing(conn, dsn):
    seed_history(conn)
    with psycopg.connect(dsn) as first:  # its transaction stays open
        assert prune(first, 31) > 0
        assert prune(conn, 31) == 0
        first.rollback()
    assert prune(conn, 31) > 0
