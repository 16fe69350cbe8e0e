"""The daemon against a real server: wake-up, timers, retries, crashes, bad input, reconnects."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

from support import catalogue
from support.poll import await_for
from tests import tools
from tests.integration.worker_harness import fetch, fetch_one, running_worker
from ue_resync.worker import Worker


async def outcomes(dsn: str, job_id: int) -> list[tuple[int, str]]:
    rows = await fetch(
        dsn,
        "SELECT attempt, outcome FROM resync.job_runs WHERE job_id = %s ORDER BY id",
        job_id,
    )
    return [(a, o) for a, o in rows]


async def job_done(dsn: str, job_id: int) -> bool:
    return await fetch_one(dsn, "SELECT count(*) = 0 FROM resync.pgqueuer WHERE id = %s", job_id)


# A worker that polls as seldom as it can: every hour, and (until its wake-ups check hears its
# own NOTIFY) every minute. Whatever it does within POLL_FLOOR / 2 of a wait's start, a wake-up
# or a timer did, never a poll, however loaded the machine.
POLL_FLOOR = 60.0
NO_POLL = {"sleep": 3600.0, "sleep_without_wakeups": POLL_FLOOR}


async def hears_its_wakeups(worker: Worker) -> None:
    """Until the worker's wake-ups check heard its NOTIFY: from then on it waits a full --sleep,
    bar the wait begun before, which the POLL_FLOOR caps."""

    async def heard() -> bool:
        return worker.wakeups.heard

    await await_for(heard, POLL_FLOOR / 4, "the wake-ups check to hear its NOTIFY")


async def test_notify_wakes_the_worker_long_before_the_poll(conn, dsn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=4)
    conn.execute("UPDATE course_units SET credits = 0 WHERE id = %s", (u,))
    async with running_worker(dsn, **NO_POLL) as worker:
        await hears_its_wakeups(worker)
        job = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
        await await_for(lambda: job_done(dsn, job), POLL_FLOOR / 4, "the job to run")
    assert catalogue.totals(conn, u)[0] == 4
    assert catalogue.read_unit(conn, u)["last_job_sync"] is not None


async def test_poll_finds_a_job_whose_notification_was_lost(conn, dsn):
    u = catalogue.unit(conn)
    conn.execute("ALTER TABLE resync.pgqueuer DISABLE TRIGGER tg_pgqueuer_changed")
    async with running_worker(dsn, sleep=0.3):
        job = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
        await await_for(lambda: job_done(dsn, job), 10, "polling to find the job")
    assert await outcomes(dsn, job) == [(1, "succeeded")]


async def test_a_deferred_job_runs_when_due_not_before(conn, dsn):
    u = catalogue.unit(conn)
    async with running_worker(dsn, **NO_POLL) as worker:
        await hears_its_wakeups(worker)
        job = conn.execute(
            "SELECT resync.request(%s, 'later', interval '1 second')", (u,)
        ).fetchone()[0]
        due = conn.execute(
            "SELECT execute_after FROM resync.pgqueuer WHERE id = %s", (job,)
        ).fetchone()[0]
        # Run by a timer: no wake-up comes when it falls due, and no poll within the wait.
        await await_for(lambda: job_done(dsn, job), POLL_FLOOR / 4, "the deferred job")
    started = await fetch_one(dsn, "SELECT started_at FROM resync.job_runs WHERE job_id = %s", job)
    assert started >= due  # the server's clock both times


def record_retries(conn: psycopg.Connection) -> None:
    """Keep each re-queue of a job in public.retries: its attempts, the delay it was given
    (execute_after - updated: both from the one now() of resync.retry_job) and its due time."""
    conn.execute(
        """
        CREATE TABLE public.retries (
            job_id bigint, attempts integer, delay interval, due timestamptz);
        CREATE FUNCTION public.record_retry() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.retries
            VALUES (NEW.id, NEW.attempts, NEW.execute_after - NEW.updated, NEW.execute_after);
            RETURN NULL;
        END $$;
        CREATE TRIGGER record_retry AFTER UPDATE ON resync.pgqueuer
            FOR EACH ROW WHEN (OLD.status = 'picked' AND NEW.status = 'queued')
            EXECUTE FUNCTION public.record_retry();
        """
    )


@pytest.mark.parametrize(("tries", "delays"), [(3, [30, 60]), (4, [30, 60, 120])])
async def test_retry_schedule_then_failed(conn, dsn, tries, delays):
    catalogue.install_poison(conn)
    record_retries(conn)
    u = catalogue.unit(conn, code="POISON1")
    scale = 0.01  # 30 s backoff runs as 0.3 s
    async with running_worker(dsn, tries=tries, time_scale=scale):
        job = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]

        async def failed() -> bool:
            return (
                await fetch_one(
                    dsn, "SELECT count(*) FROM resync.failed_jobs WHERE job_id = %s", job
                )
                == 1
            )

        await await_for(failed, 20, "the job to end failed")
    runs = await fetch(
        dsn,
        "SELECT attempt, outcome, started_at, sqlstate, error "
        "FROM resync.job_runs WHERE job_id = %s ORDER BY id",
        job,
    )
    assert [(r[0], r[1]) for r in runs] == (
        [(n, "retrying") for n in range(1, tries)] + [(tries, "failed")]
    )
    assert all(r[3] == "P0001" and "poisoned unit POISON1" in r[4] for r in runs)
    retries = conn.execute(
        "SELECT attempts, delay, due FROM public.retries WHERE job_id = %s ORDER BY attempts",
        (job,),
    ).fetchall()
    assert [(a, round(d.total_seconds() / scale, 3)) for a, d, _ in retries] == list(
        enumerate(delays, 1)
    )
    # Each attempt ran once its retry fell due, not before (found by the poll: a re-queue
    # sets no timer).
    for (_, _, due), rerun in zip(retries, runs[1:], strict=True):
        assert due <= rerun[2], (due, rerun[2])
    row = conn.execute(
        "SELECT status::text, attempts, payload FROM resync.pgqueuer WHERE id = %s", (job,)
    ).fetchone()
    assert row[0] == "failed" and row[1] == tries - 1
    assert json.loads(bytes(row[2]))["course_unit_id"] == u  # payload intact
    failed_row = conn.execute(
        "SELECT last_error, attempts FROM resync.failed_jobs WHERE job_id = %s", (job,)
    ).fetchone()
    assert "poisoned unit" in failed_row[0] and failed_row[1] == tries


async def test_a_unit_that_no_longer_exists_completes_without_retry(conn, dsn):
    u = catalogue.unit(conn)
    job = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    conn.execute("DELETE FROM course_units WHERE id = %s", (u,))
    async with running_worker(dsn):
        await await_for(lambda: job_done(dsn, job), 10, "the job to complete")
    assert await outcomes(dsn, job) == [(1, "missing_unit")]


BAD_PAYLOADS = [
    (b"\xff\xfe not utf8", "payload is not JSON"),
    (b"{not json", "payload is not JSON"),
    (b"[1, 2]", "expected an object"),
    (b'{"reason": "x"}', "course_unit_id must be an integer"),
    (b'{"course_unit_id": "abc"}', "course_unit_id must be an integer"),
    (b'{"course_unit_id": 1.5}', "course_unit_id must be an integer"),
    (b'{"course_unit_id": -3}', "out of range"),
    (None, "payload is empty"),
]


async def test_bad_payloads_fail_with_a_clear_error_and_good_jobs_still_run(conn, dsn):
    u = catalogue.unit(conn)
    bad = []
    for payload, _ in BAD_PAYLOADS:
        bad.append(
            conn.execute(
                "INSERT INTO resync.pgqueuer (priority, entrypoint, status, payload) "
                "VALUES (0, 'resync_course_unit', 'queued', %s) RETURNING id",
                (payload,),
            ).fetchone()[0]
        )
    unknown = conn.execute(
        "INSERT INTO resync.pgqueuer (priority, entrypoint, status, payload) "
        "VALUES (0, 'send_email', 'queued', 'x') RETURNING id"
    ).fetchone()[0]
    good = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    async with running_worker(dsn):

        async def all_settled() -> bool:
            return (
                await fetch_one(
                    dsn, "SELECT count(*) FROM resync.pgqueuer WHERE status <> 'failed'"
                )
                == 0
            )

        await await_for(all_settled, 15, "every job to settle")
    errors = dict(conn.execute("SELECT job_id, last_error FROM resync.failed_jobs").fetchall())
    for job_id, (_, message) in zip(bad, BAD_PAYLOADS, strict=True):
        assert message in errors[job_id], (job_id, errors.get(job_id))
    assert "unknown entrypoint 'send_email'" in errors[unknown]
    assert await outcomes(dsn, good) == [(1, "succeeded")]


async def test_a_job_left_running_by_a_dead_worker_is_counted_and_rerun(conn, dsn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=5)
    conn.execute("UPDATE course_units SET credits = 1 WHERE id = %s", (u,))
    job = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    # What a SIGKILLed daemon leaves: the job picked with a stale heartbeat, its run open.
    conn.execute(
        "UPDATE resync.pgqueuer SET status = 'picked', queue_manager_id = gen_random_uuid(), "
        "heartbeat = now() - interval '1 hour' WHERE id = %s",
        (job,),
    )
    conn.execute(
        "INSERT INTO resync.job_runs (job_id, course_unit_id, attempt) VALUES (%s, %s, 1)",
        (job, u),
    )
    async with running_worker(dsn):
        await await_for(lambda: job_done(dsn, job), 15, "recovery of the job")
    assert await outcomes(dsn, job) == [(1, "crashed"), (2, "succeeded")]
    assert catalogue.totals(conn, u)[0] == 5


async def test_a_job_that_keeps_killing_its_worker_ends_failed(conn, dsn):
    u = catalogue.unit(conn)
    job = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    conn.execute(
        "UPDATE resync.pgqueuer SET status = 'picked', queue_manager_id = gen_random_uuid(), "
        "heartbeat = now() - interval '1 hour', attempts = 2 WHERE id = %s",
        (job,),
    )
    conn.execute(
        "INSERT INTO resync.job_runs (job_id, course_unit_id, attempt) VALUES (%s, %s, 3)",
        (job, u),
    )
    async with running_worker(dsn, tries=3):

        async def failed() -> bool:
            return (
                await fetch_one(dsn, "SELECT status::text FROM resync.pgqueuer WHERE id = %s", job)
                == "failed"
            )

        await await_for(failed, 15, "the poison job to fail")
    assert await outcomes(dsn, job) == [(3, "crashed"), (4, "failed")]


async def test_reconnects_after_its_connections_are_killed(conn, dsn):
    u = catalogue.unit(conn)
    async with running_worker(dsn) as worker:
        first = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
        await await_for(lambda: job_done(dsn, first), 10, "the first job")
        assert worker.ready.is_set()
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'ue-resync%%' AND datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchone()[0]
        assert killed >= 3

        async def not_ready() -> bool:  # for at least the 0.5 s before the first reconnect
            return not worker.ready.is_set()

        await await_for(not_ready, 10, "the worker to notice the loss")
        await asyncio.wait_for(worker.ready.wait(), 20)
        second = conn.execute("SELECT resync.request(%s, 'after_restart')", (u,)).fetchone()[0]
        await await_for(lambda: job_done(dsn, second), 20, "a job after the reconnect")
        assert worker.metrics.registry.get_sample_value("ue_resync_reconnects_total") >= 1
    assert await outcomes(dsn, second) == [(1, "succeeded")]


async def test_a_lost_connection_hands_the_job_in_flight_back_without_an_attempt(conn, dsn):
    """The resync connection is cut while its job waits on the UE's row: the run is
    'interrupted', the job is queued again, and its next run is still attempt 1."""
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=6)
    conn.execute("UPDATE course_units SET credits = 0 WHERE id = %s", (u,))
    waiting = (
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'ue-resync %% resync-%%' "
        "AND datname = current_database() AND wait_event_type = 'Lock'"
    )
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
        # --timeout 60: nothing but the cut ends the wait.
        async with running_worker(dsn, timeout=60.0):
            job = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
            [(pid,)] = await await_for(
                lambda: fetch(dsn, waiting), 15, "the resync to wait on the row"
            )
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

            async def taken_again() -> bool:
                return len(await outcomes(dsn, job)) == 2

            await await_for(taken_again, 30, "the job handed back and taken again")
            assert await outcomes(dsn, job) == [(1, "interrupted"), (1, "running")]
            assert conn.execute(
                "SELECT attempts FROM resync.pgqueuer WHERE id = %s", (job,)
            ).fetchone() == (0,)
            holder.rollback()
            await await_for(lambda: job_done(dsn, job), 15, "the job to finish")
    assert await outcomes(dsn, job) == [(1, "interrupted"), (1, "succeeded")]
    assert catalogue.totals(conn, u)[0] == 6


async def test_a_batch_isolates_the_one_failing_unit(conn, dsn):
    good = [catalogue.unit(conn) for _ in range(5)]
    bad = catalogue.unit(conn, code="POISON2")
    for u in [*good, bad]:
        catalogue.element(conn, u, credits=2)
    conn.execute("UPDATE course_units SET credits = 0")
    catalogue.install_poison(conn)
    jobs = {u: conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0] for u in [*good, bad]}
    async with running_worker(dsn, tries=1, batch_size=10):

        async def settled() -> bool:
            return (
                await fetch_one(
                    dsn, "SELECT count(*) FROM resync.pgqueuer WHERE status <> 'failed'"
                )
                == 0
            )

        await await_for(settled, 15, "the batch to settle")
    for u in good:
        assert catalogue.totals(conn, u)[0] == 2
        assert await outcomes(dsn, jobs[u]) == [(1, "succeeded")]
    assert await outcomes(dsn, jobs[bad]) == [(1, "failed")]


async def test_two_workers_never_resync_one_unit_at_the_same_time(conn, dsn):
    units = [catalogue.unit(conn) for _ in range(20)]
    for u in units:
        catalogue.element(conn, u)
    async with running_worker(dsn, batch_size=3), running_worker(dsn, batch_size=3):
        for _round in range(5):
            for u in units:
                conn.execute("SELECT resync.request(%s)", (u,))

            async def drained() -> bool:
                return await fetch_one(dsn, "SELECT count(*) FROM resync.pgqueuer") == 0

            await await_for(drained, 20, "both workers to drain")
    workers = conn.execute("SELECT count(DISTINCT worker_id) FROM resync.job_runs").fetchone()[0]
    assert workers == 2
    overlaps = conn.execute(
        "SELECT count(*) FROM resync.job_runs a JOIN resync.job_runs b "
        "  ON a.course_unit_id = b.course_unit_id AND a.id < b.id "
        " AND a.worker_id <> b.worker_id "
        " AND tstzrange(a.locked_at, a.finished_at) && tstzrange(b.locked_at, b.finished_at)"
        " WHERE a.outcome = 'succeeded' AND b.outcome = 'succeeded'"
    ).fetchone()[0]
    assert overlaps == 0
    assert catalogue.drift_count(conn) == 0


async def test_refuses_to_start_on_an_old_schema(conn, dsn):
    conn.execute(
        "DELETE FROM resync.schema_migrations WHERE version = "
        "(SELECT max(version) FROM resync.schema_migrations)"
    )
    from tests.integration.worker_harness import settings_for
    from ue_resync.migrate import MigrationError
    from ue_resync.worker import Worker

    with pytest.raises(MigrationError, match="run `ue-resync migrate`"):
        await asyncio.wait_for(Worker(settings_for(dsn), dsn).run(), 10)


def test_payload_json_helper_never_raises(conn):
    rows = conn.execute(
        "SELECT resync.payload_json(x) FROM unnest(array['\\xff'::bytea, '{}'::bytea, "
        "'[]'::bytea, NULL]) x"
    ).fetchall()
    assert [r[0] for r in rows] == [None, {}, None, None]
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO resync.pgqueuer (priority, entrypoint, status, resync_unit) "
            "VALUES (0, 'resync_course_unit', 'queued', 1), "
            "(0, 'resync_course_unit', 'queued', 1)"
        )


def restart_server(pg_server) -> None:
    """Restart the PostgreSQL server under the test: the embedded one through the support layer
    (which keeps its handle current), the system one with pg_ctlcluster (CI runs as root next to
    its Debian cluster)."""
    import subprocess

    if pg_server.can_restart:
        pg_server.restart()
        return
    ctl = tools.require("pg_ctlcluster", "Debian's postgresql-common, beside the server")
    subprocess.run(
        [ctl, "--skip-systemctl-redirect", str(pg_server.version), "main", "restart"],
        check=True,
        timeout=120,
    )


async def test_survives_a_server_restart_and_loses_nothing(conn, dsn, pg_server):
    units = [catalogue.unit(conn) for _ in range(10)]
    for u in units:
        catalogue.element(conn, u, credits=1)
    conn.execute("UPDATE course_units SET credits = 0")
    # Due while the server is down: they must run after it, not vanish. The changes made after
    # the restart are on the other UEs: a job for the same UE would take a held job's place
    # (resync.release_jobs) whenever the worker hands it back after that change.
    before = [
        conn.execute("SELECT resync.request(%s, 'before', interval '1 second')", (u,)).fetchone()[0]
        for u in units[:5]
    ]
    async with running_worker(dsn) as worker:
        await asyncio.to_thread(restart_server, pg_server)
        with psycopg.connect(dsn, autocommit=True) as again:
            again.execute("SET ue_resync.mode = 'deferred'")
            again.execute(
                "UPDATE course_unit_elements SET credits = 2 WHERE course_unit_id = ANY(%s)",
                (units[5:],),
            )

            async def consistent() -> bool:
                return await fetch_one(
                    dsn, "SELECT count(*) = 0 FROM resync.drift"
                ) and await fetch_one(dsn, "SELECT count(*) = 0 FROM resync.pgqueuer")

            await await_for(consistent, 60, "the queue to drain after the restart")
        assert worker.metrics.registry.get_sample_value("ue_resync_reconnects_total") >= 1
    with psycopg.connect(dsn, autocommit=True) as check:
        credits = dict(check.execute("SELECT id, credits::float FROM course_units").fetchall())
        assert credits == {u: 1.0 if u in units[:5] else 2.0 for u in units}
        ran = check.execute(
            "SELECT count(DISTINCT job_id) FROM resync.job_runs "
            "WHERE job_id = ANY(%s) AND outcome = 'succeeded'",
            (before,),
        ).fetchone()[0]
        assert ran == len(before)


async def test_the_gauges_that_scan_the_queue_run_only_when_metrics_are_served(conn, dsn):
    # ue_resync_deferred_jobs / ue_resync_coalesced_events read every queued job's payload;
    # a daemon without --metrics-port must not pay that every few seconds.
    conn.execute("SELECT resync.request(%s, 'later', interval '1 hour')", (catalogue.unit(conn),))
    async with running_worker(dsn) as worker:
        m = worker.metrics

        async def samples(gauge: Any) -> list[Any]:
            return [s for metric in gauge.collect() for s in metric.samples]

        async def delayed_counted() -> bool:
            return m.registry.get_sample_value("ue_resync_queue_depth", {"state": "delayed"}) == 1

        await await_for(delayed_counted, 15, "the queue depth gauges")
        assert await samples(m.deferred) == []
        m.served = True
        found = await await_for(lambda: samples(m.deferred), 15, "the deferred gauges")
        assert [(s.labels, s.value) for s in found] == [({"reason": "later", "sqlstate": ""}, 1.0)]
