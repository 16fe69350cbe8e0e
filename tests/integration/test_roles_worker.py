"""Least privilege, resync_worker: pgqueuer's own queries run with it, and it can neither
write the catalogue nor act as an operator. (The daemon and the check timer running with it:
tests/e2e/test_roles_cli.py.)"""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
from pgqueuer.adapters.drivers.psycopg import PsycopgDriver
from pgqueuer.adapters.persistence import qb
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.domain import types
from pgqueuer.ports.repository import EntrypointExecutionParameter

from support import catalogue
from tests.roles import denied, scalar
from ue_resync.queue_manager import PGQ_SETTINGS


async def test_pgqueuer_own_queries_run_as_resync_worker(conn, login):
    """What the daemon cannot show us: pgqueuer swallows a failed log aggregation."""
    u = catalogue.unit(conn)
    first = scalar(conn, "SELECT resync.request(%s)", (u,))
    second = scalar(conn, "SELECT resync.request(%s)", (catalogue.unit(conn),))
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
        # What is left: the failed job, held in the queue table.
        assert [(s.entrypoint, s.status, s.count) for s in await queries.queue_size()] == [
            ("resync_course_unit", "failed", 1)
        ]
    assert scalar(conn, "SELECT count(*) FROM resync.pgqueuer_statistics") > 0
    assert scalar(conn, "SELECT status::text FROM resync.pgqueuer WHERE id = %s", (second,)) == (
        "failed"
    )


def test_worker_cannot_write_the_catalogue_or_act_as_an_operator(conn, login):
    u = catalogue.unit(conn)
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
    assert [j["id"] for j in catalogue.jobs(conn)] == [job]
