"""`ue-resync work` and every CLI command through pgbouncer: no prepared-statement error, no
reconnect loop; the daemon's wake-up self-check says whether its LISTEN hears anything, polls at
the bounded interval when not, and UE_RESYNC_LISTEN_URL gives the wake-ups back."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from support import catalogue, processes
from support.poll import wait_for
from tests import pgbouncer

pytestmark = pytest.mark.e2e

DEAF = "wake-ups do not arrive"
HEARD = "wake-ups checked"
# The daemons here poll every hour, and at least a minute apart until their wake-ups check has
# answered: a change resynced within WITHIN seconds was found by a wake-up or by the bounded
# poll of a deaf daemon (0.5 s), however loaded the machine.
NO_POLL = {"UE_RESYNC_SLEEP": "3600", "UE_RESYNC_SLEEP_WITHOUT_WAKEUPS": "60"}
WITHIN = 30.0


@pytest.fixture(scope="module")
def tx_bouncer(pg_server) -> Iterator[pgbouncer.Pgbouncer]:
    with pgbouncer.started(pg_server.host, pg_server.port, "transaction") as b:
        yield b


@pytest.fixture(scope="module")
def session_bouncer(pg_server) -> Iterator[pgbouncer.Pgbouncer]:
    with pgbouncer.started(pg_server.host, pg_server.port, "session", pool_size=20) as b:
        yield b


class Daemon:
    def __init__(self, url: str, tmp_path: Path, **env: str) -> None:
        self.proc = processes.spawn_daemon(url, cwd=tmp_path, **env)

    def output(self) -> str:
        return processes.output(self.proc)

    def wait_for_line(self, marker: str, timeout: float = 20) -> None:
        def seen() -> bool:
            assert self.proc.poll() is None, f"the daemon exited:\n{self.output()}"
            return marker in self.output()

        wait_for(seen, timeout, f"'{marker}' in the daemon's log")

    def stop(self) -> str:
        assert processes.stop(self.proc) == 0, self.output()[-3000:]
        return self.output()


def resynced(conn: psycopg.Connection, app: psycopg.Connection) -> None:
    """Defer one element change (through `app`), wait WITHIN seconds for its UE's resync."""
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=1)
    with app.transaction():
        app.execute("SET LOCAL ue_resync.mode = 'deferred'")
        app.execute("UPDATE course_unit_elements SET credits = 7 WHERE id = %s", (e,))
    wait_for(lambda: catalogue.totals(conn, u)[0] == 7, WITHIN, "the deferred resync")


def assert_clean(log: str) -> None:
    for bad in ("Traceback", "PreparedStatement", "reconnecting", "_pg3_"):
        assert bad not in log, f"{bad!r} in the daemon's log:\n{log[-4000:]}"


def app_through(bouncer: pgbouncer.Pgbouncer, dsn: str) -> psycopg.Connection:
    return psycopg.connect(bouncer.route(dsn), autocommit=True, prepare_threshold=None)


def test_through_a_transaction_pooler_the_daemon_says_it_is_deaf_and_polls(
    tx_bouncer, dsn, conn, tmp_path
):
    # Only the bounded poll of a deaf daemon can find the jobs.
    daemon = Daemon(tx_bouncer.route(dsn), tmp_path, UE_RESYNC_SLEEP="3600")
    try:
        daemon.wait_for_line(DEAF)
        with app_through(tx_bouncer, dsn) as app:
            for _ in range(4):
                resynced(conn, app)
    finally:
        log = daemon.stop()
    assert_clean(log)
    [line] = [ln for ln in log.splitlines() if DEAF in ln]
    assert "UE_RESYNC_LISTEN_URL" in line and "polling every 0.5 s" in line


def test_the_listen_url_gives_the_wakeups_back(tx_bouncer, dsn, conn, tmp_path):
    assert_woken(tx_bouncer, dsn, conn, tmp_path, 4, UE_RESYNC_LISTEN_URL=dsn)


def test_through_a_session_pooler_wakeups_work(session_bouncer, dsn, conn, tmp_path):
    assert_woken(session_bouncer, dsn, conn, tmp_path, 3)


def assert_woken(bouncer, dsn, conn, tmp_path, changes, **env):
    """A daemon that hardly polls (NO_POLL) behind `bouncer` hears its wake-ups: it says nothing
    of being deaf, and each of `changes` deferred changes is resynced long before a poll."""
    daemon = Daemon(bouncer.route(dsn), tmp_path, **NO_POLL, **env)
    try:
        daemon.wait_for_line(HEARD)
        with app_through(bouncer, dsn) as app:
            for _ in range(changes):
                resynced(conn, app)
    finally:
        log = daemon.stop()
    assert_clean(log)
    assert DEAF not in log


# About 35 CLI processes: 17 s here, 80 s at a load of 10 on 2 cores.
@pytest.mark.timeout(300)
def test_every_cli_command_through_a_transaction_pooler(tx_bouncer, dsn, conn, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        out = processes.run(tx_bouncer.route(dsn), *args, cwd=tmp_path)
        assert "PreparedStatement" not in out.stderr, out.stderr
        return out

    a, b = catalogue.unit(conn), catalogue.unit(conn)
    for u in (a, b):
        catalogue.element(conn, u, credits=3)
    conn.execute("UPDATE course_units SET credits = 9 WHERE id IN (%s, %s)", (a, b))
    failed = conn.execute("SELECT resync.request(%s)", (b,)).fetchone()[0]
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (failed,))
    # Each command several times: a prepared statement would break from the second on.
    for _ in range(3):
        assert cli("migrate").returncode == 0
        assert json.loads(cli("monitor", "--json").stdout)["failed_total"] == 1
        assert [f["job_id"] for f in json.loads(cli("failed", "--json").stdout)] == [failed]
        assert cli("check").returncode == 3  # a and b drifted
    assert cli("request", str(a), "--delay", "1h").returncode == 0
    assert json.loads(cli("sync", str(a), "--json").stdout)["changes"] == {"credits": [9, 3]}
    assert cli("retry", str(failed)).returncode == 0
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (failed,))
    assert cli("forget", str(failed)).returncode == 0
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed'")
    assert "deleted 1 failed job(s)" in cli("flush").stdout
    assert cli("request", str(b)).returncode == 0
    assert "deleted 1 queued job(s)" in cli("clear", "--force").stdout
    assert json.loads(cli("check", "--enqueue", "--json").stdout)["queued"] == 1
    out = cli("work", "--stop-when-empty")
    assert out.returncode == 0, out.stderr[-3000:]
    assert catalogue.drift_count(conn) == 0
