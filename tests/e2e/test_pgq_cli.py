"""pgqueuer's own command line (`pgq`, from the pgqueuer package ue-resync depends on) on
ue-resync's queue, as docs/operations.md ("pgqueuer's command line") says to run it: the commands
that read the queue work; `pgq queue` of a resync is coalesced like every other event; `pgq
upgrade` without the channel rewrites the queue's trigger, which the daemon's wake-up check
names and `ue-resync migrate` repairs."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from support import catalogue
from support.env import scrubbed_env
from support.poll import wait_for
from support.processes import spawn_daemon
from ue_resync import installation, migrate

pytestmark = pytest.mark.e2e


def pgq(
    dsn: str, *args: str, channel: str | None = "ue_resync"
) -> subprocess.CompletedProcess[str]:
    env = scrubbed_env(None, PGDSN=dsn, PGQUEUER_SCHEMA="resync")
    if channel:
        env["PGQUEUER_CHANNEL"] = channel
    return subprocess.run(
        [sys.executable, "-m", "pgqueuer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_reading_commands_understand_the_queue(conn, dsn):
    u = catalogue.unit(conn)
    failed = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (failed,))
    conn.execute("SELECT resync.request(%s, 'later', interval '1 hour')", (u,))
    assert pgq(dsn, "verify", "--expect", "present").returncode == 0
    listed = pgq(dsn, "failed")
    assert listed.returncode == 0 and str(failed) in listed.stdout
    backlog = pgq(dsn, "backlog")
    assert backlog.returncode == 0 and "resync_course_unit" in backlog.stdout
    for command in ("workers", "stale"):
        assert pgq(dsn, command).returncode == 0, command
    plan = pgq(dsn, "upgrade", "--plan")
    assert plan.returncode == 0
    assert "PgQueuer schema is already up to date." in plan.stdout + plan.stderr


def test_pgq_queue_is_coalesced_per_unit(conn, dsn):
    u = catalogue.unit(conn)
    payload = json.dumps({"course_unit_id": u})
    first = pgq(dsn, "queue", "resync_course_unit", payload)
    assert first.returncode == 0 and first.stdout.startswith("Enqueued job"), first.stderr
    # The second event joins the UE's queued job; pgq reports the row it did not insert.
    second = pgq(dsn, "queue", "resync_course_unit", payload)
    assert "duplicate" in second.stdout + second.stderr
    [job] = catalogue.jobs(conn)
    assert job["headers"] == {"course_unit_id": str(u), "reason": "manual_trigger"}
    assert conn.execute(
        "SELECT resync_unit, resync_events FROM resync.pgqueuer WHERE id = %s", (job["id"],)
    ).fetchone() == (u, 2)
    # And with ue-resync's own request, the same job.
    assert conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0] == job["id"]


def test_pgq_upgrade_without_the_channel_is_named_and_repaired(conn, dsn, tmp_path):
    upgraded = pgq(dsn, "upgrade", channel=None)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (
        "'ch_pgqueuer'"
        in conn.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'fn_pgqueuer_changed'"
        ).fetchone()[0]
    )
    assert any("fn_pgqueuer_changed() differs" in line for line in installation.verify(conn))

    log = tmp_path / "daemon.log"
    daemon = spawn_daemon(dsn, cwd=tmp_path, log=log, UE_RESYNC_SLEEP="0.2")
    try:
        wait_for(lambda: "wake-ups do not arrive" in log.read_text(), 30, "the wake-up check")
        assert "fn_pgqueuer_changed" in log.read_text()
    finally:
        daemon.terminate()
        daemon.wait(30)

    with psycopg.connect(dsn, autocommit=True) as other:
        migrate.run(other)
    assert installation.verify(conn) == []
    assert (
        "'ue_resync'"
        in conn.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'fn_pgqueuer_changed'"
        ).fetchone()[0]
    )


def test_pgq_requeue_is_refused_where_ue_resync_retry_merges(conn, dsn, cli):
    u = catalogue.unit(conn)
    failed = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (failed,))
    queued = conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0]
    refused = pgq(dsn, "requeue", str(failed))
    assert (
        refused.returncode != 0 and "pgqueuer_resync_queued_unit" in refused.stdout + refused.stderr
    )
    merged = cli("retry", str(failed))
    assert merged.returncode == 0, merged.stderr
    assert [j["id"] for j in catalogue.jobs(conn)] == [queued]
