"""Least privilege (sql/definitions/roles_and_grants.sql): each role's boundary, proven with
login roles on a real server. Roles are cluster-wide: every login role made here has a unique
name and is dropped when its test ends, whatever the outcome.

What each role may do, and what these tests hold it to:
- resync_monitor reads the operator views and the run history with its workers' table (and
  nothing else: no other table, no function that writes);
- resync_requester inserts requests (only the columns a request is made of), calls
  resync.request(), and reads the request log (resync.requests, so INSERT … RETURNING works);
  it reads nothing else: not the queue, not the run history, not the catalogue;
- resync_worker runs `ue-resync work` and `ue-resync check --enqueue` and prunes the history;
- an application role with rights on course_units / course_unit_elements only (no right at
  all on schema resync) writes elements and the UE still syncs, or defers, through the
  SECURITY DEFINER triggers, even under a hostile search_path."""

from __future__ import annotations

from typing import Any

import psycopg

from support import catalogue
from tests.roles import denied, scalar, seed_operator_state
from ue_resync import scripts

# roles_and_grants.sql as migrate renders it (the default mapping).
GRANTS = next(d.text for d in scripts.definitions() if d.name == "roles_and_grants")
GROUP_ROLES = ("resync_worker", "resync_monitor", "resync_requester")
MONITOR_VIEWS = (
    "queue_status",
    "failed_jobs",
    "drift",
    "validation_warnings",
    "alerts",
)
MONITOR_TABLES = ("job_runs", "workers")


# -- the catalogue -------------------------------------------------------------------------------


def test_the_group_roles_exist_and_cannot_log_in(conn):
    rows = conn.execute(
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
        "FROM pg_roles WHERE rolname = ANY (%s) ORDER BY rolname",
        (list(GROUP_ROLES),),
    ).fetchall()
    assert [r[0] for r in rows] == sorted(GROUP_ROLES)
    assert all(r[1:] == (False, False, False, False, False) for r in rows)


def test_no_resync_function_is_executable_by_public(conn):
    # PostgreSQL grants EXECUTE to PUBLIC on every new function: roles_and_grants.sql takes it
    # back from every function of the schema (and says why).
    leaking = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p "
        "WHERE p.pronamespace = 'resync'::regnamespace "
        "  AND (p.proacl IS NULL OR EXISTS ("
        "       SELECT 1 FROM aclexplode(p.proacl) a "
        "       WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')) "
        "ORDER BY 1"
    ).fetchall()
    assert leaking == []


def test_the_views_roles_read_are_security_barriers(conn):
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c "
        "WHERE c.relnamespace = 'resync'::regnamespace AND c.relkind = 'v' "
        "  AND 'security_barrier=true' = ANY (coalesce(c.reloptions, '{}'))"
    ).fetchall()
    assert set(MONITOR_VIEWS) <= {r[0] for r in rows}


def acl_snapshot(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT c.relname, c.relacl::text, NULL FROM pg_class c "
        "WHERE c.relnamespace = 'resync'::regnamespace "
        "UNION ALL SELECT p.oid::regprocedure::text, p.proacl::text, NULL FROM pg_proc p "
        "WHERE p.pronamespace = 'resync'::regnamespace "
        "UNION ALL SELECT a.attname, a.attacl::text, a.attrelid::regclass::text "
        "FROM pg_attribute a WHERE a.attrelid = 'resync.requests'::regclass "
        "ORDER BY 1, 3"
    ).fetchall()


def test_the_grants_run_again_without_change(conn):
    before = acl_snapshot(conn)
    with conn.transaction():
        conn.execute(GRANTS.encode("utf-8"))
    assert acl_snapshot(conn) == before


def test_the_grants_file_takes_back_what_it_does_not_grant(conn):
    """A right granted by an earlier version (or by hand) to one of the three roles does not
    survive the next application of the definitions."""
    before = acl_snapshot(conn)
    conn.execute("GRANT SELECT ON resync.pgqueuer, resync.thresholds TO resync_monitor")
    conn.execute("GRANT EXECUTE ON FUNCTION resync.clear_queue() TO resync_requester, PUBLIC")
    assert acl_snapshot(conn) != before
    with conn.transaction():
        conn.execute(GRANTS.encode("utf-8"))
    assert acl_snapshot(conn) == before


# -- resync_monitor ------------------------------------------------------------------------------


def test_monitor_reads_every_view(conn, login):
    seeded = seed_operator_state(conn)
    with login("monitor", "resync_monitor").connect() as mon:
        for view in MONITOR_VIEWS + MONITOR_TABLES:
            mon.execute(f"SELECT * FROM resync.{view}").fetchall()
        assert scalar(mon, "SELECT queued FROM resync.queue_status") == 0
        assert scalar(mon, "SELECT job_id FROM resync.failed_jobs") == seeded["failed_job"]
        assert scalar(mon, "SELECT traceback FROM resync.failed_jobs") == {
            "exception_message": "boom"
        }
        assert scalar(mon, "SELECT course_unit_id FROM resync.drift") == seeded["drifted"]
        assert scalar(mon, "SELECT outcome FROM resync.job_runs") == "failed"
        assert mon.execute("SELECT name FROM resync.alerts WHERE name = 'drift'").fetchall()


def test_monitor_writes_nothing_and_reads_no_other_table(conn, login):
    seeded = seed_operator_state(conn)
    u = seeded["drifted"]
    with login("monitor", "resync_monitor").connect() as mon:
        for statement in (
            "INSERT INTO resync.requests (course_unit_id) VALUES (%(u)s)",
            "UPDATE resync.pgqueuer SET priority = 1",
            "DELETE FROM resync.pgqueuer",
            "DELETE FROM resync.job_runs",
            "INSERT INTO resync.workers (id, hostname, pid, version) "
            "VALUES (gen_random_uuid(), 'x', 1, 'x')",
            "UPDATE resync.thresholds SET value = '1000'",
            "UPDATE resync.error_policy SET auto_resync = false",
            "UPDATE course_units SET credits = 0",
            "DELETE FROM course_unit_elements",
            "SELECT * FROM resync.pgqueuer",
            "SELECT * FROM resync.sync_failures",
            "SELECT * FROM resync.thresholds",
            "SELECT * FROM course_units",
            "SELECT resync.request(%(u)s)",
            "SELECT resync.sync_now(%(u)s)",
            "SELECT resync.retry_failed(NULL)",
            "SELECT resync.forget_failed(NULL)",
            "SELECT * FROM resync.clear_queue()",
            "SELECT resync.enqueue_drifted()",
            "SELECT resync.prune_history()",
        ):
            denied(mon, statement, {"u": u})
    assert scalar(conn, "SELECT count(*) FROM resync.pgqueuer WHERE status = 'failed'") == 1


# -- resync_requester ----------------------------------------------------------------------------


def test_requester_queues_resyncs_both_ways(conn, login):
    u = catalogue.unit(conn)
    v = catalogue.unit(conn)
    who = login("requester", "resync_requester")
    with who.connect() as req:
        req_id, job = req.execute(
            "INSERT INTO resync.requests (course_unit_id, reason, run_at) "
            "VALUES (%s, 'nightly', now() + interval '1 hour') RETURNING id, job_id",
            (u,),
        ).fetchone()
        other = scalar(req, "SELECT resync.request(%s, 'manual_trigger', interval '0')", (v,))
        # The request log is the one thing it reads.
        assert scalar(req, "SELECT count(*) FROM resync.requests") == 2
    assert [j["id"] for j in catalogue.jobs(conn, u)] == [job]
    assert [j["id"] for j in catalogue.jobs(conn, v)] == [other]
    assert scalar(conn, "SELECT requested_by FROM resync.requests WHERE id = %s", (req_id,)) == (
        who.name
    )


def test_requester_touches_neither_the_queue_nor_other_tables(conn, login):
    u = catalogue.unit(conn)
    catalogue.element(conn, u)
    job = scalar(conn, "SELECT resync.request(%s)", (u,))
    with login("requester", "resync_requester").connect() as req:
        for statement in (
            "SELECT * FROM resync.pgqueuer",
            "INSERT INTO resync.pgqueuer (priority, entrypoint, status) "
            "VALUES (0, 'resync_course_unit', 'queued')",
            "UPDATE resync.pgqueuer SET execute_after = now() + interval '1 year'",
            "DELETE FROM resync.pgqueuer WHERE id = %(job)s",
            "TRUNCATE resync.pgqueuer",
            "SELECT * FROM resync.pgqueuer_log",
            "SELECT * FROM resync.job_runs",
            "SELECT * FROM resync.sync_failures",
            "SELECT * FROM resync.workers",
            "SELECT * FROM resync.thresholds",
            "SELECT * FROM resync.queue_status",
            "SELECT * FROM resync.failed_jobs",
            "SELECT * FROM resync.alerts",
            "SELECT * FROM course_units",
            "SELECT * FROM course_unit_elements",
            # who asked and when are not the requester's to say
            "INSERT INTO resync.requests (course_unit_id, requested_by) VALUES (%(u)s, 'dean')",
            "INSERT INTO resync.requests (course_unit_id, requested_at) VALUES (%(u)s, now())",
            "INSERT INTO resync.requests (course_unit_id, job_id) VALUES (%(u)s, 1)",
            "UPDATE resync.requests SET reason = 'x'",
            "DELETE FROM resync.requests",
            # the SECURITY DEFINER functions behind request() are not callable directly
            "SELECT * FROM resync.enqueue(array[%(u)s::bigint], array['x'], interval '1 year')",
            "SELECT * FROM resync.sync_units(array[%(u)s::bigint], true, false)",
            "SELECT resync.sync_now(%(u)s)",
            "SELECT * FROM resync.clear_queue()",
            "SELECT resync.forget_failed(NULL)",
            "SELECT resync.enqueue_drifted()",
        ):
            denied(req, statement, {"u": u, "job": job})
    assert [j["id"] for j in catalogue.jobs(conn)] == [job]
