"""Least privilege through the CLI: `ue-resync work` and `check --enqueue` run as
resync_worker, `monitor`, `failed` and `check` as resync_monitor, `request` as
resync_requester, each as the docs give it (docs/operations.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from support import catalogue, processes
from support.poll import wait_for
from tests.roles import scalar, seed_operator_state
from ue_resync import migrate

pytestmark = pytest.mark.e2e


def run_cli(dsn: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return processes.run(dsn, *args, cwd=cwd, **env)


def test_the_daemon_runs_as_resync_worker(conn, login, dsn, tmp_path):
    good = catalogue.unit(conn)
    catalogue.element(conn, good, credits=4)
    conn.execute("UPDATE course_units SET credits = 0 WHERE id = %s", (good,))
    locked = catalogue.unit(conn)
    ok_job = scalar(conn, "SELECT resync.request(%s)", (good,))
    retry_job = scalar(conn, "SELECT resync.request(%s)", (locked,))
    bad_job = scalar(
        conn,
        "INSERT INTO resync.pgqueuer (priority, entrypoint, status, payload) "
        "VALUES (0, 'resync_course_unit', 'queued', 'not json') RETURNING id",
    )
    worker = login("worker", "resync_worker")
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (locked,))
        done = run_cli(
            worker.dsn,
            tmp_path,
            "work",
            "--stop-when-empty",
            "--sleep",
            "0.2",
            "--timeout",
            "0.3",
            "--backoff",
            "3600",
        )
        holder.rollback()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "permission denied" not in output
    assert "superuser" not in output
    outcomes = dict(conn.execute("SELECT job_id, outcome FROM resync.job_runs").fetchall())
    assert outcomes == {ok_job: "succeeded", retry_job: "retrying", bad_job: "invalid"}
    assert catalogue.totals(conn, good)[0] == 4
    states = dict(conn.execute("SELECT id, status::text FROM resync.pgqueuer").fetchall())
    assert states == {retry_job: "queued", bad_job: "failed"}
    assert scalar(conn, "SELECT count(*) FROM resync.workers WHERE stopped_at IS NOT NULL") == 1


def test_the_check_timer_and_the_monitor_run_with_their_roles(conn, login, tmp_path):
    u = catalogue.unit(conn)
    conn.execute("SET ue_resync.mode = 'off'")
    catalogue.element(conn, u, credits=2)
    conn.execute("RESET ue_resync.mode")
    worker = login("worker", "resync_worker")
    check = run_cli(worker.dsn, tmp_path, "check", "--enqueue")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 resync(s) queued" in check.stdout
    assert [j["headers"]["reason"] for j in catalogue.jobs(conn, u)] == ["drift_detected"]
    with worker.connect() as w:
        assert scalar(w, "SELECT resync.prune_history()") == 0
    monitor = run_cli(login("monitor", "resync_monitor").dsn, tmp_path, "monitor", "--json")
    assert monitor.returncode == 0, monitor.stdout + monitor.stderr
    assert '"queued": 1' in monitor.stdout


def test_the_cli_commands_docs_give_each_role(conn, login, tmp_path):
    """docs/operations.md: monitoring runs `monitor --check`, `failed`, `check` with the
    monitor role; an application may `request` with the requester role."""
    seeded = seed_operator_state(conn)
    monitor = login("monitor", "resync_monitor").dsn
    check = run_cli(monitor, tmp_path, "monitor", "--check")
    assert check.returncode == 1, check.stdout + check.stderr  # drift: a warning
    assert check.stdout.startswith("UE-RESYNC WARNING - drift: ")
    failed = run_cli(monitor, tmp_path, "failed", "--json")
    assert failed.returncode == 0, failed.stdout + failed.stderr
    assert f'"job_id": {seeded["failed_job"]}' in failed.stdout
    drift = run_cli(monitor, tmp_path, "check")
    assert drift.returncode == 3, drift.stdout + drift.stderr  # drift left
    assert "1 course unit(s) drifted" in drift.stdout
    request = run_cli(
        login("requester", "resync_requester").dsn, tmp_path, "request", str(seeded["drifted"])
    )
    assert request.returncode == 0, request.stdout + request.stderr
    assert len(catalogue.jobs(conn, seeded["drifted"])) == 1


def test_grants_lost_in_a_restore_are_named_by_the_monitor_and_the_daemon(
    conn, login, dsn, tmp_path
):
    """What `pg_restore --no-privileges` leaves: ue-resync's roles without their rights. The
    monitor check is CRITICAL and says what to run; the daemon says it once per attempt, keeps
    running, and works as soon as `migrate` gives the rights back."""
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=3)
    conn.execute("UPDATE course_units SET credits = 0 WHERE id = %s", (u,))
    job = scalar(conn, "SELECT resync.request(%s)", (u,))
    worker = login("worker", "resync_worker")
    monitor = login("monitor", "resync_monitor")
    conn.execute("REVOKE USAGE ON SCHEMA resync FROM resync_worker, resync_monitor")

    as_monitor = run_cli(monitor.dsn, tmp_path, "monitor", "--check")
    assert as_monitor.returncode == 2, as_monitor.stdout + as_monitor.stderr
    assert as_monitor.stdout.startswith("UE-RESYNC CRITICAL - "), as_monitor.stdout
    assert "permission denied" in as_monitor.stdout and "migrate --verify" in as_monitor.stdout
    plain = run_cli(monitor.dsn, tmp_path, "monitor")
    lines = plain.stderr.strip().splitlines()
    assert plain.returncode == 1 and len(lines) == 1, plain.stderr
    assert "permission denied for schema resync" in lines[0] and "migrate --verify" in lines[0]
    as_owner = run_cli(dsn, tmp_path, "monitor", "--check")
    assert as_owner.returncode == 2, as_owner.stdout + as_owner.stderr
    assert "installation: " in as_owner.stdout, as_owner.stdout

    proc = processes.spawn_daemon(
        worker.dsn, "--sleep", "0.2", cwd=tmp_path, log=tmp_path / "daemon.log"
    )
    try:
        wait_for(
            lambda: "the database lacks what ue-resync installs" in processes.output(proc),
            30,
            "the daemon to say what it lacks",
        )
        processes.check_alive(proc)
        line = next(x for x in processes.output(proc).splitlines() if "lacks what ue-resync" in x)
        assert "permission denied for schema resync" in line and "migrate --verify" in line, line
        migrate.run(conn)
        wait_for(
            lambda: catalogue.totals(conn, u)[0] == 3, 60, "the daemon to run the job once repaired"
        )
        assert scalar(conn, "SELECT outcome FROM resync.job_runs WHERE job_id = %s", (job,)) == (
            "succeeded"
        )
    finally:
        assert processes.stop(proc) == 0, processes.tail(proc)
