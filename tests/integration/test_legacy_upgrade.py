"""A database migrated before the baseline (ledger at 0014 from the 14 numbered files the
baseline replaced, frozen in tests/fixtures/legacy_sql) upgrades with `migrate.apply` — what
`ue-resync migrate` runs — to the schema of a fresh install, its rows, queued and failed jobs
kept."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from support import catalogue
from tests import schema
from ue_resync import ledger, migrate, scripts
from ue_resync.queries import query


def _legacy_state(conn: psycopg.Connection) -> dict[str, int]:
    """Rows of every kind the old schema held: synced units, a queued job due later (a request),
    a coalesced deferred-mode job, a failed job with its runs and traceback, a failed inline
    sync, an edited threshold."""
    a, b, c = catalogue.unit(conn), catalogue.unit(conn), catalogue.unit(conn)
    catalogue.element(conn, a, credits=2, cm=3, td=4, tp=5)
    catalogue.element(conn, b, credits=1)
    later = conn.execute("SELECT resync.request(%s, 'nightly', interval '1 hour')", (a,))
    queued = later.fetchone()[0]
    conn.execute("SET ue_resync.mode = 'deferred'")
    element = catalogue.element(conn, b)
    conn.execute("UPDATE course_unit_elements SET credits = 4 WHERE id = %s", (element,))
    conn.execute("RESET ue_resync.mode")
    deferred = conn.execute(
        "SELECT id FROM resync.pgqueuer WHERE headers ->> 'course_unit_id' = %s", (str(b),)
    ).fetchone()[0]
    failed = conn.execute(
        "SELECT job_id FROM resync.enqueue(array[%s::bigint], array['manual_trigger'], "
        "interval '0')",
        (c,),
    ).fetchone()[0]
    conn.execute(
        "UPDATE resync.pgqueuer SET status = 'failed', attempts = 2 WHERE id = %s", (failed,)
    )
    for attempt, outcome in ((1, "retrying"), (2, "failed"), (3, "failed")):
        conn.execute(
            "INSERT INTO resync.run_history (job_id, course_unit_id, attempt, outcome, "
            "finished_at, error, sqlstate) VALUES (%s, %s, %s, %s, now(), %s, '57014')",
            (failed, c, attempt, outcome, f"canceling statement due to timeout ({attempt})"),
        )
    conn.execute(
        "INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority, traceback) "
        "VALUES (%s, 'failed', 'resync_course_unit', 0, '{\"exception_message\": \"boom\"}')",
        (failed,),
    )
    conn.execute(
        "INSERT INTO resync.sync_failures (course_unit_id, action, reason, sqlstate, error) "
        "VALUES (%s, 'updated', 'sync_error_after_updated', '55P03', 'lock timeout')",
        (c,),
    )
    conn.execute("UPDATE resync.settings SET value = '20' WHERE name = 'queued_jobs'")
    return {"a": a, "b": b, "c": c, "queued": queued, "deferred": deferred, "failed": failed}


JOBS = (
    "SELECT id, status::text, execute_after, attempts, headers, payload, resync_events, "
    "resync_last_reason, resync_deadline FROM resync.pgqueuer ORDER BY id"
)
RUNS = (
    "SELECT id, job_id, course_unit_id, attempt, outcome, error, sqlstate, started_at, "
    "finished_at FROM {} ORDER BY id"
)
KEPT = (
    "SELECT (SELECT array_agg(row(u.*)::text ORDER BY id) FROM course_units u), "
    "(SELECT array_agg(row(e.*)::text ORDER BY id) FROM course_unit_elements e), "
    "(SELECT array_agg(row(f.*)::text ORDER BY id) FROM resync.sync_failures f), "
    "(SELECT array_agg(row(r.*)::text ORDER BY id) FROM resync.requests r), "
    "(SELECT array_agg(row(l.*)::text ORDER BY id) FROM resync.pgqueuer_log l)"
)


def test_a_database_migrated_before_the_baseline_upgrades_to_a_fresh_install(
    empty_dsn, dsn, pg_server
):
    schema.migrate_the_old_way(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        seeded = _legacy_state(conn)
        jobs = conn.execute(JOBS).fetchall()
        runs = conn.execute(RUNS.format("resync.run_history")).fetchall()
        kept = conn.execute(KEPT).fetchone()
        with pytest.raises(migrate.MigrationError, match="at version 14, this ue-resync needs"):
            ledger.check_current(conn)

        applied = migrate.apply(conn)
        assert [s.name for s in applied] == [
            *(m.name for m in scripts.available()[1:]),
            *schema.DEFINITIONS_STEPS,
        ]
        assert ledger.check_current(conn) == scripts.code_schema_version()
        assert migrate.apply(conn) == []

    # dsn: a fresh install of this code (the test template).
    assert schema.snapshot(empty_dsn) == schema.snapshot(dsn)
    history = schema.migrations_ledger(empty_dsn)
    assert [v for v, _, _ in history] == list(range(1, scripts.code_version() + 1))
    assert history[13][1] == "0014_bulk_statement_plans"  # the old history stays
    assert schema.definitions_ledger(empty_dsn) == schema.definitions_ledger(dsn)

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        # The rows, the jobs (queued, coalesced, failed) and the runs are the same rows.
        assert conn.execute(JOBS).fetchall() == jobs
        assert conn.execute(RUNS.format("resync.job_runs")).fetchall() == runs
        assert conn.execute(KEPT).fetchone() == kept
        # 0016 gave every job its UE in the column the coalescing key is on.
        assert conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE resync_unit::text = "
            "headers ->> 'course_unit_id') FROM resync.pgqueuer"
        ).fetchone() == (len(jobs), len(jobs))
        assert conn.execute(
            "SELECT value FROM resync.thresholds WHERE name = 'queued_jobs'"
        ).fetchone() == ("20",)
        # What `ue-resync failed` reads lists the failed job with its last error.
        with conn.cursor(row_factory=dict_row) as cur:
            failed = cur.execute(query("failed_jobs")).fetchall()
        assert [(f["job_id"], f["last_error"]) for f in failed] == [
            (seeded["failed"], "canceling statement due to timeout (3)")
        ]
        # Identities go on after the rows kept.
        conn.execute(
            "INSERT INTO resync.job_runs (job_id, attempt) VALUES (%s, 1)", (seeded["queued"],)
        )
        assert conn.execute("SELECT max(id) FROM resync.job_runs").fetchone()[0] == 4

        # The new triggers run: inline, and deferred into the UE's queued job.
        catalogue.element(conn, seeded["c"], credits=5, cm=1, td=1, tp=1)
        assert catalogue.totals(conn, seeded["c"])[0] == 5
        conn.execute("SET ue_resync.mode = 'deferred'")
        catalogue.element(conn, seeded["a"])
        assert [(j["id"], j["status"]) for j in catalogue.jobs(conn, seeded["a"])] == [
            (seeded["queued"], "queued")
        ]
        assert conn.execute(
            "SELECT resync_events FROM resync.pgqueuer WHERE id = %s", (seeded["queued"],)
        ).fetchone() == (2,)
