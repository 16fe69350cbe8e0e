"""`ue-resync work` as a process: signals, a SIGKILL and its recovery, --max-time."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time

import psycopg
import pytest

from support import catalogue, processes
from support.poll import wait_for
from support.processes import spawn_daemon

pytestmark = pytest.mark.e2e


def start_daemon(dsn: str, tmp_path, **env: str) -> subprocess.Popen[bytes]:
    return spawn_daemon(dsn, cwd=tmp_path, UE_RESYNC_SLEEP="0.2", **env)


def live_workers(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM resync.workers WHERE stopped_at IS NULL").fetchone()[
        0
    ]


def run_state(conn: psycopg.Connection, job: int) -> list[tuple[int, str]]:
    return conn.execute(
        "SELECT attempt, outcome FROM resync.job_runs WHERE job_id = %s ORDER BY id", (job,)
    ).fetchall()


def waiting_on_lock(conn: psycopg.Connection) -> bool:
    return conn.execute(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name LIKE 'ue-resync%%' "
        "AND wait_event_type = 'Lock'"
    ).fetchone()[0]


def test_sigterm_lets_the_resync_in_flight_finish(conn, dsn, tmp_path):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=2)
    conn.execute("UPDATE course_units SET credits = 0 WHERE id = %s", (u,))
    proc = start_daemon(dsn, tmp_path, UE_RESYNC_TIMEOUT="20")
    try:
        wait_for(lambda: live_workers(conn), 20, "the daemon to start")
        with psycopg.connect(dsn) as holder:
            holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
            job = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
            wait_for(lambda: waiting_on_lock(conn), 10, "the resync to wait on the row")
            proc.send_signal(signal.SIGTERM)
            holder.rollback()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_state(conn, job) == [(1, "succeeded")]
    assert catalogue.totals(conn, u)[0] == 2
    assert conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone()[0] == 0
    assert live_workers(conn) == 0


def test_sigkill_mid_job_is_recovered_by_another_daemon(conn, dsn, tmp_path):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=4)
    conn.execute("UPDATE course_units SET credits = 0 WHERE id = %s", (u,))
    fast = {"UE_RESYNC_HEARTBEAT_TIMEOUT": "2", "UE_RESYNC_TIMEOUT": "30"}
    first = start_daemon(dsn, tmp_path, **fast)
    second = None
    try:
        wait_for(lambda: live_workers(conn), 20, "the first daemon")
        with psycopg.connect(dsn) as holder:
            holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
            job = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
            wait_for(lambda: waiting_on_lock(conn), 10, "the resync to be in flight")
            first.kill()
            first.wait(10)
            holder.rollback()
        last_beat = conn.execute(
            "SELECT heartbeat FROM resync.pgqueuer WHERE id = %s", (job,)
        ).fetchone()[0]
        second = start_daemon(dsn, tmp_path, **fast)
        wait_for(
            lambda: run_state(conn, job)[-1:] == [(2, "succeeded")],
            60,
            "the second daemon to re-run the job",
        )
        # Taken over as stale: not before the dead daemon's heartbeat was 2 s old.
        rerun = conn.execute(
            "SELECT started_at - %s FROM resync.job_runs WHERE job_id = %s AND attempt = 2",
            (last_beat, job),
        ).fetchone()[0]
        assert rerun >= dt.timedelta(seconds=2), rerun
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    assert run_state(conn, job) == [(1, "crashed"), (2, "succeeded")]
    assert catalogue.totals(conn, u)[0] == 4


def test_max_time_stops_the_daemon_after_that_long_and_says_so(conn, dsn, tmp_path):
    started = time.monotonic()
    proc = start_daemon(dsn, tmp_path, UE_RESYNC_MAX_TIME="3")
    assert proc.wait(60) == 0, processes.output(proc)
    lived = time.monotonic() - started
    log = processes.output(proc)
    assert lived >= 3, (lived, log)
    assert "stopping (--max-time 3 s reached)" in log, log
    assert "worker stopped (--max-time 3 s reached)" in log, log
    # It worked meanwhile: registered, then marked stopped on the way out.
    assert (
        conn.execute("SELECT count(*) FROM resync.workers WHERE stopped_at IS NOT NULL").fetchone()[
            0
        ]
        == 1
    )


def test_stop_when_empty_drains_what_is_due(conn, dsn, tmp_path):
    units = [catalogue.unit(conn) for _ in range(30)]
    jobs = [conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0] for u in units]
    later = conn.execute(
        "SELECT resync.request(%s, 'later', interval '1 hour')", (catalogue.unit(conn),)
    ).fetchone()[0]
    proc = start_daemon(dsn, tmp_path, UE_RESYNC_STOP_WHEN_EMPTY="true")
    assert proc.wait(60) == 0
    done = conn.execute(
        "SELECT count(*) FROM resync.job_runs WHERE outcome = 'succeeded' AND job_id = ANY(%s)",
        (jobs,),
    ).fetchone()[0]
    assert done == 30
    assert (
        conn.execute("SELECT status::text FROM resync.pgqueuer WHERE id = %s", (later,)).fetchone()[
            0
        ]
        == "queued"
    )


def test_json_logs_carry_the_job_and_the_old_tags(conn, dsn, tmp_path):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=8)  # > 6 credits: an LMD warning too
    conn.execute("UPDATE course_units SET credits = 1 WHERE id = %s", (u,))
    job = conn.execute("SELECT resync.request(%s, 'json_test')", (u,)).fetchone()[0]
    log_file = tmp_path / "resync.log"
    out = processes.run(
        # The password must not reach the log.
        dsn.replace("user=postgres", "user=postgres password=hunter2-secret"),
        *("--log-format", "json", "--log-file", str(log_file), "work", "--stop-when-empty"),
        cwd=tmp_path,
        UE_RESYNC_SLEEP="0.2",
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(line)["record"] for line in out.stderr.splitlines() if line.strip()]
    resynced = [r for r in records if r["message"].startswith("resynced UE")]
    assert len(resynced) == 1
    extra = resynced[0]["extra"]
    assert (extra["job_id"], extra["course_unit_id"], extra["attempt"], extra["reason"]) == (
        job,
        u,
        1,
        "json_test",
    )
    # The run's own duration, as resync.job_runs recorded it.
    recorded = conn.execute(
        "SELECT extract(epoch FROM finished_at - started_at)::float8 "
        "FROM resync.job_runs WHERE job_id = %s",
        (job,),
    ).fetchone()[0]
    assert extra["course_unit_code"] == catalogue.read_unit(conn, u)["code"]
    assert extra["duration"] == pytest.approx(recorded, abs=1e-6)
    assert extra["changes"]["credits"] == [1, 8]
    assert extra["tag"] == "Resynchronisation différée"
    assert extra["job_class"] == "ResyncCourseUnitJob"
    assert any(r["extra"].get("warning") == "credits_above_max" for r in records)
    assert "hunter2-secret" not in out.stderr
    in_file = [json.loads(line)["record"]["message"] for line in log_file.read_text().splitlines()]
    assert any(m.startswith("resynced UE") for m in in_file)


def test_metrics_endpoint(conn, dsn, tmp_path):
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    u = catalogue.unit(conn)
    conn.execute("SELECT resync.request(%s)", (u,))
    conn.execute("SELECT resync.request(%s, 'later', interval '1 hour')", (catalogue.unit(conn),))
    proc = start_daemon(dsn, tmp_path, UE_RESYNC_METRICS_PORT=str(port))
    try:

        def scrape() -> str | None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
            except OSError:
                return None
            text = body.read().decode()
            return (
                text
                if 'ue_resync_resyncs_total{outcome="succeeded"} 1.0' in text
                and ('ue_resync_queue_depth{state="delayed"} 1.0' in text)
                else None
            )

        text = wait_for(scrape, 20, "metrics with one resync and one delayed job")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    for name in (
        "ue_resync_resync_duration_seconds_bucket",
        "ue_resync_retries_total",
        "ue_resync_failures_total",
        "ue_resync_reconnects_total",
        "ue_resync_oldest_due_age_seconds",
        "ue_resync_coalesced_events",
        'ue_resync_deferred_jobs{reason="later",sqlstate=""} 1.0',
        "ue_resync_build_info",
    ):
        assert name in text, name


def test_every_line_about_a_job_names_the_job_and_its_ue(conn, dsn, tmp_path):
    catalogue.install_poison(conn)
    u = catalogue.unit(conn, code="POISON1")
    job = conn.execute("SELECT resync.request(%s, 'log_test')", (u,)).fetchone()[0]
    args = ("work", "--stop-when-empty", "--tries", "2", "--backoff", "0")
    text = processes.run(dsn, *args, cwd=tmp_path, UE_RESYNC_SLEEP="0.2")
    assert text.returncode == 0, text.stderr
    about = f"[job {job}, UE {u}] "
    failures = [line for line in text.stderr.splitlines() if "resync failed" in line]
    assert len(failures) == 2, text.stderr
    assert (
        about + "resync failed (attempt 1/2), retry in 0 ms: poisoned unit POISON1" in (failures[0])
    )
    assert about + "resync failed for good after 2 attempt(s)" in failures[1]
    started = next(line for line in text.stderr.splitlines() if "worker started" in line)
    info = conn.info
    assert f"database {info.dbname} on {info.host}:{info.port} as {info.user}" in started

    conn.execute("SELECT resync.retry_failed(%s)", (job,))
    as_json = processes.run(dsn, "--log-format", "json", *args, cwd=tmp_path, UE_RESYNC_SLEEP="0.2")
    assert as_json.returncode == 0, as_json.stderr
    lines = [json.loads(line) for line in as_json.stderr.splitlines() if line.strip()]
    failed = [n for n in lines if "resync failed" in n["record"]["message"]]
    assert len(failed) == 2
    for line in failed:
        assert (line["record"]["extra"]["job_id"], line["record"]["extra"]["course_unit_id"]) == (
            job,
            u,
        )
        assert about + "resync failed" in line["text"]


def test_a_daemon_that_never_connected_exits_with_the_whole_message(dsn, tmp_path):
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    missing = psycopg.conninfo.make_conninfo(dsn, dbname=f"{dbname}_missing")
    refused = "postgresql://someone:s3cr3t-pw@127.0.0.1:1/app?connect_timeout=2"
    for url, reason in (
        (missing, f'FATAL: database "{dbname}_missing" does not exist'),
        (refused, "Connection refused; Is the server running"),
    ):
        out = processes.run(url, "work", cwd=tmp_path, timeout=30)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 1 and len(lines) == 1, out.stderr
        assert lines[0].startswith("ue-resync: cannot connect to ") and reason in lines[0]
        assert "s3cr3t" not in lines[0] and "reconnecting" not in out.stderr
