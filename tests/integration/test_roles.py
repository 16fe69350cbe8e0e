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

import dataclasses
import itertools
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgqueuer.adapters.drivers.psycopg import PsycopgDriver
from pgqueuer.adapters.persistence import qb
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.domain import types
from pgqueuer.ports.repository import EntrypointExecutionParameter
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from tests import catalog
from ue_resync.queue_manager import PGQ_SETTINGS

SQL_DIR = Path(__file__).resolve().parents[2] / "sql" / "definitions"
GROUP_ROLES = ("resync_worker", "resync_monitor", "resync_requester")
MONITOR_VIEWS = (
    "queue_status",
    "failed_jobs",
    "drift",
    "validation_warnings",
    "alerts",
)
MONITOR_TABLES = ("job_runs", "workers")
_serial = itertools.count()


@dataclasses.dataclass(frozen=True)
class Login:
    name: str
    dsn: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)


@pytest.fixture
def login(conn: psycopg.Connection, dsn: str) -> Iterator[Callable[..., Login]]:
    """`login(kind, *grants)`: a new login role (password set, whatever pg_hba asks for) with
    the given GRANT clauses (`'resync_worker'` or `'SELECT ON course_units'`…), dropped at the
    end of the test with everything it owns or was granted in this database."""
    made: list[str] = []

    def make(kind: str, *grants: str) -> Login:
        name = f"ue_resync_t_{kind}_{os.getpid()}_{next(_serial)}"
        password = secrets.token_hex(16)
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        made.append(name)
        for grant in grants:
            conn.execute(sql.SQL(f"GRANT {grant} TO {{}}").format(sql.Identifier(name)))
        return Login(name, make_conninfo(dsn, user=name, password=password))

    yield make
    for name in made:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def denied(conn: psycopg.Connection, statement: str, params: Any = None) -> None:
    """`statement` fails for lack of a privilege (autocommit: the session goes on)."""
    with pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement, params)  # type: ignore[arg-type]


def scalar(conn: psycopg.Connection, statement: str, params: Any = None) -> Any:
    row = conn.execute(statement, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def seed_operator_state(conn: psycopg.Connection) -> dict[str, int]:
    """One of everything the views show: a drifted UE, a failed job with a traceback, a run."""
    drifted = catalog.unit(conn)
    conn.execute("SET ue_resync.mode = 'off'")
    catalog.element(conn, drifted, credits=2)
    conn.execute("RESET ue_resync.mode")
    failed = scalar(conn, "SELECT resync.request(%s)", (catalog.unit(conn),))
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (failed,))
    conn.execute(
        "INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority, traceback) "
        "VALUES (%s, 'failed', 'resync_course_unit', 0, '{\"exception_message\": \"boom\"}')",
        (failed,),
    )
    conn.execute(
        "INSERT INTO resync.job_runs (job_id, course_unit_id, attempt, outcome, finished_at, "
        "error) VALUES (%s, %s, 1, 'failed', now(), 'boom')",
        (failed, drifted),
    )
    return {"drifted": drifted, "failed_job": failed}


def cli_env(dsn: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UE_RESYNC_", "DATABASE_URL"))}
    env.update(UE_RESYNC_DATABASE_URL=dsn, UE_RESYNC_LOG_FORMAT="text", **extra)
    return env


def run_cli(dsn: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ue_resync", *args],
        env=cli_env(dsn, **env),
        cwd=cwd,  # no stray .env
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- the catalogue ----------------------------------------------------------------------------


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
        conn.execute((SQL_DIR / "roles_and_grants.sql").read_text("utf-8").encode("utf-8"))
    assert acl_snapshot(conn) == before


def test_the_grants_file_takes_back_what_it_does_not_grant(conn):
    """A right granted by an earlier version (or by hand) to one of the three roles does not
    survive the next application of the definitions."""
    before = acl_snapshot(conn)
    conn.execute("GRANT SELECT ON resync.pgqueuer, resync.thresholds TO resync_monitor")
    conn.execute("GRANT EXECUTE ON FUNCTION resync.clear_queue() TO resync_requester, PUBLIC")
    assert acl_snapshot(conn) != before
    with conn.transaction():
        conn.execute((SQL_DIR / "roles_and_grants.sql").read_text("utf-8").encode("utf-8"))
    assert acl_snapshot(conn) == before


# -- resync_monitor ---------------------------------------------------------------------------


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


# -- resync_requester -------------------------------------------------------------------------


def test_requester_queues_resyncs_both_ways(conn, login):
    u = catalog.unit(conn)
    v = catalog.unit(conn)
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
    assert [j["id"] for j in catalog.jobs(conn, u)] == [job]
    assert [j["id"] for j in catalog.jobs(conn, v)] == [other]
    assert scalar(conn, "SELECT requested_by FROM resync.requests WHERE id = %s", (req_id,)) == (
        who.name
    )


def test_requester_touches_neither_the_queue_nor_other_tables(conn, login):
    u = catalog.unit(conn)
    catalog.element(conn, u)
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
    assert [j["id"] for j in catalog.jobs(conn)] == [job]


# -- the application role ---------------------------------------------------------------------

APP_GRANTS = (
    "SELECT, INSERT, UPDATE, DELETE ON course_units, course_unit_elements",
    "USAGE ON SEQUENCE course_units_id_seq, course_unit_elements_id_seq",
)


def test_an_application_role_without_queue_rights_syncs_inline(conn, login):
    u = catalog.unit(conn)
    app = login("app", *APP_GRANTS)
    assert not scalar(
        conn,
        "SELECT has_function_privilege(%s, 'resync.on_element_statement()', 'EXECUTE') "
        "    OR has_schema_privilege(%s, 'resync', 'USAGE')",
        (app.name, app.name),
    )
    with app.connect() as writer:
        e = catalog.element(writer, u, credits=3, cm=10, td=5, tp=5)
        catalog.element(writer, u, credits=2, cm=4, td=4, tp=4)
        writer.execute("UPDATE course_unit_elements SET credits = 4 WHERE id = %s", (e,))
        denied(writer, "SELECT * FROM resync.pgqueuer")
        denied(writer, "SELECT resync.request(%s)", (u,))
    assert catalog.totals(conn, u) == (6, 14, 9, 9, 32, 2)
    assert catalog.jobs(conn) == []


def test_an_application_role_without_queue_rights_still_defers(conn, login, dsn):
    u = catalog.unit(conn)
    app = login("app", *APP_GRANTS)
    with app.connect() as writer:
        e = catalog.element(writer, u, credits=3)
        with psycopg.connect(dsn) as holder:  # not autocommit: holds the UE row
            holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
            writer.execute("UPDATE course_unit_elements SET credits = 5 WHERE id = %s", (e,))
            holder.rollback()
    [job] = catalog.jobs(conn, u)
    assert job["status"] == "queued"
    assert job["headers"]["reason"] == "sync_error_after_updated"
    assert scalar(conn, "SELECT sqlstate FROM resync.sync_failures") == "55P03"
    assert catalog.totals(conn, u)[0] == 3  # the deferred job will write 5


# -- a hostile search_path --------------------------------------------------------------------

EVIL = """
CREATE SCHEMA evil;
CREATE TABLE evil.hijacked (what text);
CREATE TABLE evil.course_units (LIKE public.course_units);
CREATE TABLE evil.course_unit_elements (LIKE public.course_unit_elements);
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('now()') RETURNING pg_catalog.now() $$;
CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('current_setting') RETURNING 'off'::text $$;
CREATE FUNCTION evil.set_config(text, text, boolean) RETURNS text LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('set_config') RETURNING $2 $$;
CREATE FUNCTION evil.round(numeric, integer) RETURNS numeric LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('round') RETURNING 666::numeric $$;
CREATE FUNCTION evil.left(text, integer) RETURNS text LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('left') RETURNING $1 $$;
CREATE FUNCTION evil.spy_sum(numeric, numeric) RETURNS numeric LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('sum') RETURNING 666::numeric $$;
CREATE AGGREGATE evil.sum(numeric) (SFUNC = evil.spy_sum, STYPE = numeric);
CREATE FUNCTION evil.spy_int8eq(bigint, bigint) RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('=') RETURNING $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.spy_int8eq);
"""
# pg_catalog is searched first unless the path names it: the attacker names it after evil.
HOSTILE_PATH = "SET search_path = evil, pg_catalog, public"


def hijacks(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT what FROM evil.hijacked ORDER BY 1").fetchall()]


def test_a_hostile_search_path_does_not_hijack_the_triggers(conn, login, dsn):
    u = catalog.unit(conn)
    v = catalog.unit(conn)
    app = login("app", *APP_GRANTS, "CREATE ON DATABASE " + conn.info.dbname, "resync_requester")
    with app.connect() as writer:
        writer.execute(EVIL)
        writer.execute(HOSTILE_PATH)
        # The trap works: the attacker's own statements do call evil.*.
        writer.execute("SELECT now(), round(1.5, 0), 1::bigint = 1::bigint")
        assert hijacks(writer) == ["=", "now()", "round"]
        writer.execute("TRUNCATE evil.hijacked")

        e = writer.execute(
            "INSERT INTO public.course_unit_elements "
            "(course_unit_id, code, name, credits, hours_cm, hours_td, hours_tp, hours_total) "
            "VALUES (%s, 'E1', 'e1', 3, 10, 5, 5, 20), (%s, 'E2', 'e2', 2, 4, 4, 4, 12) "
            "RETURNING id",
            (u, u),
        ).fetchone()[0]
        writer.execute("UPDATE public.course_unit_elements SET credits = 4 WHERE id = %s", (e,))
        with psycopg.connect(dsn) as holder:  # the deferral path, under the same path
            holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
            writer.execute("UPDATE public.course_unit_elements SET credits = 1 WHERE id = %s", (e,))
            holder.rollback()
        writer.execute("INSERT INTO resync.requests (course_unit_id) VALUES (%s)", (v,))
        writer.execute("SELECT resync.request(%s, 'again', '1 minute')", (v,))
        assert hijacks(writer) == []
    assert catalog.totals(conn, u) == (6, 14, 9, 9, 32, 2)
    assert catalog.read_unit(conn, u)["hours_distribution"] == {"cm": 43.8, "td": 28.1, "tp": 28.1}
    assert [j["headers"]["reason"] for j in catalog.jobs(conn, u)] == ["sync_error_after_updated"]
    [job] = catalog.jobs(conn, v)
    assert job["events"] == 2


# -- resync_worker ----------------------------------------------------------------------------


def test_the_daemon_runs_as_resync_worker(conn, login, dsn, tmp_path):
    good = catalog.unit(conn)
    catalog.element(conn, good, credits=4)
    conn.execute("UPDATE course_units SET credits = 0 WHERE id = %s", (good,))
    locked = catalog.unit(conn)
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
    assert catalog.totals(conn, good)[0] == 4
    states = dict(conn.execute("SELECT id, status::text FROM resync.pgqueuer").fetchall())
    assert states == {retry_job: "queued", bad_job: "failed"}
    assert scalar(conn, "SELECT count(*) FROM resync.workers WHERE stopped_at IS NOT NULL") == 1


async def test_pgqueuer_own_queries_run_as_resync_worker(conn, login):
    """What the daemon cannot show us: pgqueuer swallows a failed log aggregation."""
    u = catalog.unit(conn)
    first = scalar(conn, "SELECT resync.request(%s)", (u,))
    second = scalar(conn, "SELECT resync.request(%s)", (catalog.unit(conn),))
    worker = login("worker", "resync_worker")
    async with await psycopg.AsyncConnection.connect(worker.dsn, autocommit=True) as aconn:
        queries = Queries(
            PsycopgDriver(aconn),
            qbe=qb.QueryBuilderEnvironment(settings=PGQ_SETTINGS),
            qbq=qb.QueryQueueBuilder(settings=PGQ_SETTINGS),
            qbs=qb.QuerySchedulerBuilder(settings=PGQ_SETTINGS),
        )
        settings = PGQ_SETTINGS
        assert await queries.has_table(settings.queue_table)
        assert await queries.has_table(settings.statistics_table)
        assert await queries.has_table(settings.queue_table_log)
        assert await queries.table_has_column(settings.queue_table_log, "traceback")
        jobs = await queries.dequeue(
            batch_size=10,
            entrypoints={
                types.QueueEntrypoint("resync_course_unit"): EntrypointExecutionParameter(0)
            },
            queue_manager_id=types.QueueManagerId(uuid.uuid4()),
            global_concurrency_limit=None,
            heartbeat_timeout=timedelta(seconds=30),
        )
        assert sorted(j.id for j in jobs) == [first, second]
        await queries.update_heartbeat([j.id for j in jobs])
        by_id = {j.id: j for j in jobs}
        await queries.log_jobs(
            [(by_id[first], "successful", None), (by_id[second], "failed", None)]
        )
        await queries.aggregate_logs()
        assert await queries.queue_size()
    assert scalar(conn, "SELECT count(*) FROM resync.pgqueuer_statistics") > 0
    assert scalar(conn, "SELECT status::text FROM resync.pgqueuer WHERE id = %s", (second,)) == (
        "failed"
    )


def test_the_check_timer_and_the_monitor_run_with_their_roles(conn, login, tmp_path):
    u = catalog.unit(conn)
    conn.execute("SET ue_resync.mode = 'off'")
    catalog.element(conn, u, credits=2)
    conn.execute("RESET ue_resync.mode")
    worker = login("worker", "resync_worker")
    check = run_cli(worker.dsn, tmp_path, "check", "--enqueue")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 resync(s) queued" in check.stdout
    assert [j["headers"]["reason"] for j in catalog.jobs(conn, u)] == ["drift_detected"]
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
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert "1 course unit(s) drifted" in drift.stdout
    request = run_cli(
        login("requester", "resync_requester").dsn, tmp_path, "request", str(seeded["drifted"])
    )
    assert request.returncode == 0, request.stdout + request.stderr
    assert len(catalog.jobs(conn, seeded["drifted"])) == 1


def test_worker_cannot_write_the_catalogue_or_act_as_an_operator(conn, login):
    u = catalog.unit(conn)
    job = scalar(conn, "SELECT resync.request(%s)", (u,))
    with login("worker", "resync_worker").connect() as w:
        for statement in (
            "UPDATE course_units SET credits = 99",
            "SELECT * FROM course_unit_elements",
            "INSERT INTO resync.pgqueuer (priority, entrypoint, status) "
            "VALUES (0, 'resync_course_unit', 'queued')",
            "TRUNCATE resync.pgqueuer",
            "DELETE FROM resync.job_runs",
            "DELETE FROM resync.pgqueuer_log",
            "INSERT INTO resync.requests (course_unit_id) VALUES (%(u)s)",
            "UPDATE resync.thresholds SET value = '1'",
            "UPDATE resync.error_policy SET auto_resync = false",
            "SELECT * FROM resync.clear_queue()",
            "SELECT resync.forget_failed(NULL)",
            "SELECT resync.retry_failed(NULL)",
            "SELECT resync.sync_now(%(u)s)",
            "SELECT * FROM resync.enqueue(array[%(u)s::bigint], array['x'], interval '0')",
            "SELECT * FROM resync.alerts",
        ):
            denied(w, statement, {"u": u})
    assert [j["id"] for j in catalog.jobs(conn)] == [job]
