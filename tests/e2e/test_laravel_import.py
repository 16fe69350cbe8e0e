"""`ue-resync import-laravel` on rows the real Laravel wrote: ResyncCourseUnitJob dispatched by
the fixture application, a failure recorded by Laravel's own worker and failer."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from psycopg import sql

from support import catalogue

pytestmark = pytest.mark.e2e


def laravel_rows(conn, table: str) -> list[tuple[int, str | None]]:
    """(id, class) of each row of a Laravel queue table; class None when unreadable."""
    rows = conn.execute(
        sql.SQL("SELECT id, payload FROM {} ORDER BY id").format(sql.Identifier(table))
    ).fetchall()
    out: list[tuple[int, str | None]] = []
    for i, payload in rows:
        try:
            out.append((i, json.loads(payload)["displayName"]))
        except ValueError:
            out.append((i, None))
    return out


def queue(conn) -> list[dict]:
    """The resync jobs, without the columns relative to now()."""
    return [
        {k: v for k, v in j.items() if k not in ("due_in", "deadline_in")}
        for j in catalogue.jobs(conn)
    ]


def clean(done) -> None:
    assert "Traceback" not in done.stderr, done.stderr


@pytest.fixture
def legacy(laravel, conn, dsn):
    """Laravel's queue on the day of the switch: two pending resyncs of unit a (one in 2 min,
    one now), one of unit b in an hour with a non-ASCII reason, another job class, and a
    failed resync of unit c (its row was locked through Laravel's three tries)."""
    a, b, c = (catalogue.unit(conn) for _ in range(3))
    for u in (a, b, c):
        catalogue.element(conn, u, credits=3)
    laravel.call("dispatch_job", unit=c, reason="sync_error_recovery")
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (c,))
        worker = laravel.with_env(RESYNC_JOB_LOCK_TIMEOUT="100ms")
        stats = worker.work("--fast-forward")  # three tries, 30 and 60 s apart on its clock
        holder.rollback()
    laravel.call("dispatch_job", unit=a, delay=120)
    laravel.call("dispatch_job", unit=a, reason="manual_trigger")
    laravel.call("dispatch_job", unit=b, reason="révision annuelle", delay=3600)
    laravel.call("dispatch_other", unit=a)
    assert stats == {"processed": 0, "failed": 1, "released": 2}, stats
    (failed_at,) = conn.execute("SELECT failed_at FROM failed_jobs").fetchone()
    return {"units": (a, b, c), "failed_at": failed_at.replace(tzinfo=dt.UTC)}


def test_import_moves_pending_and_failed_jobs(cli, conn, legacy):
    a, b, c = legacy["units"]
    assert [cls for _, cls in laravel_rows(conn, "jobs")].count("App\\Jobs\\SendReportJob") == 1

    done = cli("import-laravel")
    clean(done)
    assert done.returncode == 0, done.stderr
    assert "imported 3 pending ResyncCourseUnitJob row(s) from jobs" in done.stdout
    assert "imported 1 failed ResyncCourseUnitJob row(s) from failed_jobs" in done.stdout

    # Laravel keeps its other job; the imported rows are gone.
    assert [cls for _, cls in laravel_rows(conn, "jobs")] == ["App\\Jobs\\SendReportJob"]
    assert laravel_rows(conn, "failed_jobs") == []

    # a: two Laravel jobs, one resync job, due now (the earliest), first reason kept.
    [ja] = catalogue.jobs(conn, a)
    assert ja["status"] == "queued" and ja["events"] == 2
    assert ja["due_in"] <= dt.timedelta(seconds=1)
    [jb] = catalogue.jobs(conn, b)
    assert jb["payload"]["reason"] == "révision annuelle"
    assert dt.timedelta(minutes=59) < jb["due_in"] <= dt.timedelta(hours=1)

    failed = json.loads(cli("failed", "--json").stdout)
    assert [(f["course_unit_id"], f["reason"], f["attempts"]) for f in failed] == [
        (c, "sync_error_recovery", 3)
    ]
    # PHP's text of a chained exception: the PDOException first, then "Next QueryException".
    error = failed[0]["last_error"]
    assert error.startswith("PDOException: SQLSTATE[55P03]: Lock not available"), error
    assert "Next Illuminate\\Database\\QueryException: SQLSTATE[55P03]" in error
    assert dt.datetime.fromisoformat(failed[0]["failed_at"]) == legacy["failed_at"]
    assert conn.execute("SELECT sqlstate FROM resync.failed_jobs").fetchone() == ("55P03",)
    assert str(failed[0]["job_id"]) in cli("failed").stdout

    # Retried, the imported failure runs like any failed job and fixes its UE.
    conn.execute("UPDATE course_units SET credits = 42 WHERE id = %s", (c,))
    assert cli("retry", str(failed[0]["job_id"])).returncode == 0
    assert cli("work", "--stop-when-empty").returncode == 0
    assert catalogue.totals(conn, c)[0] == 3
    assert catalogue.read_unit(conn, c)["last_job_sync"] is not None
    assert catalogue.jobs(conn, c) == []


def test_running_twice_imports_nothing_twice(cli, conn, legacy):
    assert cli("import-laravel").returncode == 0
    before = queue(conn)
    again = cli("import-laravel")
    assert again.returncode == 0, again.stderr
    assert "imported 0 pending" in again.stdout and "imported 0 failed" in again.stdout
    assert queue(conn) == before


def test_dry_run_prints_and_changes_nothing(cli, conn, legacy):
    jobs_before = laravel_rows(conn, "jobs")
    done = cli("import-laravel", "--dry-run")
    clean(done)
    assert done.returncode == 0
    assert "would import 3 pending" in done.stdout and "would import 1 failed" in done.stdout
    assert "dry run: nothing changed" in done.stdout
    assert laravel_rows(conn, "jobs") == jobs_before
    assert len(laravel_rows(conn, "failed_jobs")) == 1
    assert catalogue.jobs(conn) == []


def test_unreadable_payload_is_reported_and_left_in_place(cli, conn, legacy):
    a, b, _ = legacy["units"]
    ours = [i for i, cls in laravel_rows(conn, "jobs") if cls.endswith("ResyncCourseUnitJob")]
    # Laravel's payload of b's job, cut short (as a disk or a copy truncates it).
    conn.execute("UPDATE jobs SET payload = left(payload, 200) WHERE id = %s", (ours[2],))
    done = cli("import-laravel")
    clean(done)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        f"ue-resync: jobs #{ours[2]} left in place: payload is not JSON: "
        + repr(
            conn.execute("SELECT left(payload, 40) FROM jobs WHERE id = %s", (ours[2],)).fetchone()[
                0
            ]
        )
    ]
    assert "imported 2 pending" in done.stdout and "imported 1 failed" in done.stdout
    assert ours[2] in [i for i, _ in laravel_rows(conn, "jobs")]
    assert len(catalogue.jobs(conn, a)) == 1 and catalogue.jobs(conn, b) == []


def test_import_is_one_transaction(cli, conn, legacy):
    """A failure after the resync jobs were queued takes them back: nothing runs twice."""
    conn.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'failed_jobs is read-only today'; END $$"
    )
    conn.execute(
        "CREATE TRIGGER refuse BEFORE DELETE ON failed_jobs FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    jobs_before = laravel_rows(conn, "jobs")
    done = cli("import-laravel")
    clean(done)
    assert done.returncode == 1
    assert done.stderr.strip() == "ue-resync: failed_jobs is read-only today"
    assert laravel_rows(conn, "jobs") == jobs_before
    assert catalogue.jobs(conn) == []


def test_table_names_are_options(cli, conn, legacy):
    conn.execute("ALTER TABLE jobs RENAME TO laravel_jobs")
    conn.execute("CREATE SCHEMA legacy")
    conn.execute("ALTER TABLE failed_jobs SET SCHEMA legacy")
    missing = cli("import-laravel")
    clean(missing)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "ue-resync: table 'jobs' does not exist (see --jobs-table, --failed-table)"
    )
    done = cli(
        "import-laravel", "--jobs-table", "laravel_jobs", "--failed-table", "legacy.failed_jobs"
    )
    assert done.returncode == 0, done.stderr
    assert "imported 3 pending" in done.stdout and "imported 1 failed" in done.stdout
    assert [cls for _, cls in laravel_rows(conn, "laravel_jobs")] == ["App\\Jobs\\SendReportJob"]


def test_job_class_is_an_option(cli, conn, legacy):
    """An application whose resync job has another class: only that class's rows move (here
    SendReportJob, whose public courseUnitId is read; it has no reason: the default)."""
    a, _, _ = legacy["units"]
    done = cli("import-laravel", "--job-class", "App\\Jobs\\SendReportJob")
    assert done.returncode == 0, done.stderr
    assert "imported 1 pending SendReportJob row(s) from jobs" in done.stdout
    assert "imported 0 failed SendReportJob row(s)" in done.stdout
    classes = [cls for _, cls in laravel_rows(conn, "jobs")]
    assert classes == ["App\\Jobs\\ResyncCourseUnitJob"] * 3
    [job] = catalogue.jobs(conn, a)
    assert job["payload"]["reason"] == "sync_error_recovery"
