"""The support layer the tests and benchmarks stand on (support/): what it promises them."""

from __future__ import annotations

import os
import time

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from support import catalogue
from support.catalogue import element_of, load_catalogue
from support.env import scrubbed_env
from support.poll import WaitTimeout, wait_for
from support.postgres import Database, Postgres
from ue_resync import installation


def element_triggers_enabled(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT tgenabled FROM pg_trigger "
        "WHERE tgrelid = 'public.course_unit_elements'::regclass AND NOT tgisinternal"
    ).fetchall()
    return sorted({r[0] for r in rows})


def test_a_loaded_catalogue_is_consistent_and_its_triggers_as_installed(conn):
    assert load_catalogue(conn, 20, per_unit=3) == list(range(1, 21))
    assert catalogue.drift_count(conn) == 0
    assert catalogue.jobs(conn) == []
    assert catalogue.totals(conn, 2) == (4.5, 36, 24, 12, 72, 3)
    assert [element_of(2, 3, k) for k in range(3)] == [
        r[0]
        for r in conn.execute(
            "SELECT id FROM course_unit_elements WHERE course_unit_id = 2 ORDER BY id"
        )
    ]
    # Loaded with the mode off, the firing modes untouched: the subscriber's two still REPLICA.
    assert element_triggers_enabled(conn) == ["O", "R"]
    assert installation.verify(conn) == []
    # The triggers fire: a change syncs inline.
    conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (element_of(2, 3),))
    assert catalogue.totals(conn, 2)[0] == 5


def test_a_catalogue_of_given_elements_honours_each_units_flags(conn):
    rows = [(1, 2, 10, 0, 0), (1, 3, 0, 5, 0), (2, 1, 4, 4, 4)]
    load_catalogue(
        conn, 3, elements=rows, prefix="X", flags=[(False, True, True)] + [(True,) * 3] * 2
    )
    assert catalogue.read_unit(conn, 1)["code"] == "X1"
    assert catalogue.totals(conn, 1) == (0, 10, 5, 0, 15, 2)  # credits not synced
    assert catalogue.totals(conn, 2) == (1, 4, 4, 4, 12, 1)
    assert catalogue.totals(conn, 3) == (0, 0, 0, 0, 0, 0)
    assert catalogue.drift_count(conn) == 0


def test_the_child_environment_is_scrubbed(monkeypatch):
    for name in ("UE_RESYNC_SLEEP", "DATABASE_URL", "DB_HOST", "NOTIFY_SOCKET", "WATCHDOG_USEC"):
        monkeypatch.setenv(name, "from the caller")
    monkeypatch.setenv("KEPT_BY_THE_SCRUBBER", "yes")
    env = scrubbed_env("dbname=x", UE_RESYNC_SLEEP="0.2")
    assert env["UE_RESYNC_DATABASE_URL"] == "dbname=x"
    assert env["UE_RESYNC_SLEEP"] == "0.2"  # an explicit setting wins
    assert env["KEPT_BY_THE_SCRUBBER"] == "yes"
    for name in ("DATABASE_URL", "DB_HOST", "NOTIFY_SOCKET", "WATCHDOG_USEC"):
        assert name not in env
    assert env["PYTHONPATH"].split(os.pathsep)[0].endswith("daemon")
    assert "UE_RESYNC_DATABASE_URL" not in scrubbed_env(None)


def test_wait_for_returns_the_first_truthy_value_or_names_what_it_waited_for():
    probes = iter([None, 0, "", "ready"])
    assert wait_for(lambda: next(probes), 5, "the probe") == "ready"
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="waiting for nothing at all"):
        wait_for(lambda: None, 0.1, "nothing at all")
    assert time.monotonic() - started >= 0.1
    # A probe's own error ends the wait at once: a probe finding a process dead, say.
    calls: list[int] = []

    def dead() -> None:
        calls.append(1)
        raise ProcessLookupError("gone")

    with pytest.raises(ProcessLookupError):
        wait_for(dead, 5, "a dead process")
    assert len(calls) == 1


def test_a_database_is_created_migrated_and_dropped(pg_server: Postgres):
    name = f"ue_resync_support_{os.getpid()}"
    dsn = pg_server.create_database(name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone() == (0,)
    finally:
        pg_server.drop_database(name)
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as admin:
        gone = admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        assert gone.fetchone() == (0,)
    assert pg_server.can_restart == (pg_server.embedded is not None)


def test_a_database_of_its_own_is_migrated_and_reached_through_a_proxy_port(pg_server: Postgres):
    db = Database(pg_server, "ue_resync_support_database")
    try:
        db.start()
        with psycopg.connect(db.dsn) as conn:
            assert conn.execute("SELECT to_regclass('resync.pgqueuer')::text").fetchone() == (
                "resync.pgqueuer",
            )
        assert db.version().split(".")[0] == str(pg_server.version)
        via = conninfo_to_dict(db.via(6543))
        assert (via["host"], via["port"], via["dbname"]) == ("127.0.0.1", "6543", db.name)
        assert (db.kind, db.target) == (pg_server.kind, pg_server.socket_target())
    finally:
        pg_server.drop_database(db.name)
