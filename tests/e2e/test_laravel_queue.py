"""Laravel talking to ue-resync with its query builder, the seed's three test scripts replayed
against ue-resync, and the first minutes of a cutover (old observer and triggers together)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from support import catalogue, processes
from tests.laravel.harness import Laravel, require_php

pytestmark = [pytest.mark.e2e, pytest.mark.other_programs]


def drifted(conn) -> list[int]:
    return [r[0] for r in conn.execute("SELECT course_unit_id FROM resync.drift ORDER BY 1")]


@pytest.fixture
def units(laravel, conn):
    """Three UEs of two elements each (credits 3 + 2), made through Eloquent."""
    made = []
    for _ in range(3):
        u = laravel.call("create_unit")
        laravel.call("create_element", unit=u, credits=3)
        laravel.call("create_element", unit=u, credits=2)
        made.append(u)
    return made


def test_requests_from_the_query_builder_and_queue_status(laravel, conn, units):
    a, b, _ = units
    request_id = laravel.call("insert_request", unit=a, reason="manual_trigger", delay=3600)
    job_id = laravel.call("request", unit=b, reason="custom_delay", delay=0)
    [ja], [jb] = catalogue.jobs(conn, a), catalogue.jobs(conn, b)
    assert conn.execute(
        "SELECT job_id, requested_by FROM resync.requests WHERE id = %s", (request_id,)
    ).fetchone() == (ja["id"], conn.info.user)
    assert dt.timedelta(minutes=59) < ja["due_in"] <= dt.timedelta(hours=1)
    assert jb["id"] == job_id and jb["payload"]["reason"] == "custom_delay"
    status = laravel.call("queue_status")
    assert (status["queued"], status["due"], status["delayed"], status["failed_total"]) == (
        2,
        1,
        1,
        0,
    )


def test_seed_resync_job_fixes_a_unit_and_writes_last_job_sync(laravel, conn, units):
    """test_resync_job.php: a resync (the old dispatchSync) fixes a drifted UE."""
    a, _, _ = units
    conn.execute("UPDATE course_units SET credits = 99, elements_count = 7 WHERE id = %s", (a,))
    assert drifted(conn) == [a]
    result = laravel.call("sync_now", unit=a)
    assert result["course_unit_id"] == a
    assert result["changes"]["credits"] == [99, 5]
    assert result["changes"]["elements_count"] == [7, 2]
    assert catalogue.read_unit(conn, a)["last_job_sync"] is not None
    assert drifted(conn) == []


def test_seed_sync_error_leads_to_a_delayed_job(laravel, conn, dsn, units):
    """test_observer_job_integration.php: a sync error leaves a job, due in 2 minutes."""
    a, _, _ = units
    element = conn.execute(
        "SELECT min(id) FROM course_unit_elements WHERE course_unit_id = %s", (a,)
    ).fetchone()[0]
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (a,))
        laravel.call(
            "update_element",
            id=element,
            set={"credits": 4},
            settings={"ue_resync.lock_timeout": "50ms"},
        )
        holder.rollback()
    [job] = catalogue.jobs(conn, a)
    assert job["payload"]["reason"] == "sync_error_after_updated"
    assert job["payload"]["sqlstate"] == "55P03"
    assert dt.timedelta(seconds=110) < job["due_in"] <= dt.timedelta(minutes=2)
    status = laravel.call("queue_status")
    assert (status["queued"], status["delayed"]) == (1, 1)
    assert drifted(conn) == [a]


def test_seed_worker_runs_the_jobs(laravel, conn, cli, units):
    """test_worker_jobs.php: jobs asked for by Laravel are run by the worker."""
    conn.execute("UPDATE course_units SET credits = 0 WHERE id = ANY (%s)", (units,))
    for u in units:
        laravel.call("request", unit=u, reason="manual_trigger")
    assert drifted(conn) == units
    done = cli("work", "--stop-when-empty")
    assert done.returncode == 0, done.stderr
    assert drifted(conn) == []
    outcomes = conn.execute(
        "SELECT course_unit_id, outcome FROM resync.job_runs ORDER BY course_unit_id"
    ).fetchall()
    assert outcomes == [(u, "succeeded") for u in units]
    assert laravel.call("queue_status")["queued"] == 0


def test_old_observer_and_triggers_together_stay_correct(laravel, conn):
    """The first minutes of a cutover: every write syncs the UE twice, and stays right."""
    old = laravel.with_observer()
    u, other = old.call("create_unit"), old.call("create_unit")
    e1 = old.call("create_element", unit=u, credits=3, cm=10, td=5, tp=5)
    old.call("create_element", unit=u, credits=2, cm=4, td=4, tp=2)
    old.call("update_element", id=e1, set={"hours_cm": 20, "credits": 1})
    assert catalogue.totals(conn, u) == (3, 24, 9, 7, 30, 2)
    old.call("delete_element", id=e1)
    old.call("restore_element", id=e1)
    old.call("update_element", id=e1, set={"course_unit_id": other})
    assert catalogue.totals(conn, u) == (2, 4, 4, 2, 10, 1)
    assert catalogue.totals(conn, other) == (1, 20, 5, 5, 20, 1)
    old.call("force_delete_element", id=e1)
    assert catalogue.totals(conn, other) == (0, 0, 0, 0, 0, 0)
    assert drifted(conn) == []
    assert catalogue.jobs(conn) == []
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_locked_unit_during_cutover_queues_in_both_then_import_coalesces(laravel, conn, dsn, cli):
    """Observer and triggers both meet a locked UE: the trigger queues a resync, the observer's
    QueryException dispatches ResyncCourseUnitJob; the import makes them one job."""
    old = laravel.with_observer()
    u = old.call("create_unit")
    e = old.call("create_element", unit=u, credits=3)
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
        old.call(
            "update_element",
            id=e,
            set={"credits": 4},
            settings={"ue_resync.lock_timeout": "50ms", "lock_timeout": "200ms"},
        )
        holder.rollback()
    [job] = catalogue.jobs(conn, u)
    assert job["payload"]["reason"] == "sync_error_after_updated"
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    done = cli("import-laravel")
    assert done.returncode == 0, done.stderr
    [merged] = catalogue.jobs(conn, u)
    assert merged["id"] == job["id"] and merged["events"] == 2
    assert merged["last_reason"] == "sync_error_recovery"
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_cutover_on_tables_made_by_laravel_migrations(empty_dsn, tmp_path):
    """The application's own schema (Laravel's migrations: decimal, json, timestamps without
    time zone), written by the observer, then `ue-resync migrate` while it still runs."""
    old = Laravel(require_php(), empty_dsn).with_observer()
    assert len(old.artisan("migrate")["ran"]) == 3
    u = old.call("create_unit")
    e = old.call("create_element", unit=u, credits=3, cm=10, td=5, tp=5)
    old.call("dispatch_job", unit=u, delay=120)

    migrated = processes.run(empty_dsn, "migrate", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    old.call("update_element", id=e, set={"credits": 4, "hours_tp": 15})
    old.call("create_element", unit=u, credits=1, cm=1, td=1, tp=1)
    imported = processes.run(empty_dsn, "import-laravel", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "imported 1 pending" in imported.stdout
    checked = processes.run(empty_dsn, "check", cwd=tmp_path)
    assert checked.returncode == 0 and "no drift" in checked.stdout, checked.stdout
    with psycopg.connect(empty_dsn) as conn:
        assert catalogue.totals(conn, u) == (5, 11, 6, 16, 23, 2)  # hours_total: its own column
        assert [j["payload"]["reason"] for j in catalogue.jobs(conn, u)] == ["sync_error_recovery"]
