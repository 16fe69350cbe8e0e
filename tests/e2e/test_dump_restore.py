"""What a DBA does with pg_dump and pg_restore (the binaries of the suite's own server), then
ue-resync: `migrate --verify` says what the restore lost, `migrate` puts it back, and the daemon
runs the queued and failed jobs it finds until no UE drifts. Also pg_upgrade from the system
PostgreSQL to the newer embedded one, where both are on the machine."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from support import catalogue, replication
from support.postgres import Postgres
from support.processes import run as run_cli
from tests import tools
from ue_resync import installation, migrate

pytestmark = [pytest.mark.e2e, pytest.mark.other_programs]


def tool(bindir: Path, name: str, *args: str) -> None:
    done = subprocess.run([str(bindir / name), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{name} {' '.join(args)}:\n{done.stderr}"


def seeded(conn: psycopg.Connection) -> dict[str, int]:
    """A catalogue with a UE drifted and resyncs to run: one queued, one failed."""
    units = [catalogue.unit(conn) for _ in range(3)]
    for u in units:
        catalogue.element(conn, u, credits=2)
    conn.execute("UPDATE course_units SET credits = 9 WHERE id = ANY(%s)", (units[:2],))
    queued = conn.execute("SELECT resync.request(%s)", (units[0],)).fetchone()[0]
    failed = conn.execute("SELECT resync.request(%s)", (units[1],)).fetchone()[0]
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (failed,))
    return {"queued": queued, "failed": failed}


@pytest.fixture
def fresh(pg_server: Postgres) -> Iterator[str]:
    """An empty database on the suite's server, dropped at the end."""
    name = f"ue_resync_restored_{os.getpid()}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.dsn(name)
    pg_server.drop_database(name)


def drained(dsn: str, tmp_path: Path) -> None:
    """Retry the failed jobs, run the daemon until the queue is empty; no drift is left."""
    assert run_cli(dsn, "retry", "all", cwd=tmp_path).returncode == 0
    done = run_cli(
        dsn,
        "work",
        "--stop-when-empty",
        "--sleep",
        "0.2",
        cwd=tmp_path,
        UE_RESYNC_TIME_SCALE="0.01",
    )
    assert done.returncode == 0, done.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM resync.drift").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone() == (0,)


@pytest.mark.parametrize("options", [[], ["--no-owner", "--no-privileges"]])
def test_a_full_dump_restored_into_a_fresh_database(conn, dsn, fresh, bindir, tmp_path, options):
    jobs = seeded(conn)
    dump = tmp_path / "app.dump"
    tool(bindir, "pg_dump", "-Fc", "-f", str(dump), "-d", dsn)
    tool(bindir, "pg_restore", *options, "-d", fresh, str(dump))
    with psycopg.connect(fresh, autocommit=True) as restored:
        found = installation.verify(restored)
        if options:
            # Every right of ue-resync's roles is gone; migrate gives them back.
            assert "grant schema resync to resync_worker is missing" in found
            migrate.run(restored)
        assert installation.verify(restored) == []
        assert [r[0] for r in restored.execute("SELECT id FROM resync.pgqueuer ORDER BY id")] == [
            jobs["queued"],
            jobs["failed"],
        ]
    drained(fresh, tmp_path)


@pytest.mark.parametrize("disable_triggers", [False, True])
def test_a_data_only_reload_of_the_catalogue(
    conn, dsn, app_dsn, bindir, tmp_path, disable_triggers
):
    seeded(conn)
    dump = tmp_path / "data.dump"
    tables = ["-t", "course_units", "-t", "course_unit_elements"]
    tool(bindir, "pg_dump", "-Fc", "--data-only", *tables, "-f", str(dump), "-d", dsn)
    with psycopg.connect(app_dsn, autocommit=True) as target:
        migrate.apply(target)  # ue-resync installed first, on empty tables
    options = ["--disable-triggers"] if disable_triggers else []
    tool(bindir, "pg_restore", "--data-only", *options, "-d", app_dsn, str(dump))
    with psycopg.connect(app_dsn, autocommit=True) as target:
        if disable_triggers:
            # pg_restore ends each table with ENABLE TRIGGER ALL: the subscriber's two triggers
            # then fire in every session; verify says so and migrate puts them back.
            found = installation.verify(target)
            assert len(found) == 2 and all("fires in every session" in f for f in found), found
            migrate.run(target)
        assert installation.verify(target) == []
        drifted = target.execute("SELECT count(*) FROM resync.drift").fetchone()[0]
        # Without --disable-triggers the elements' rows synced their UEs as they arrived;
        # with it, the UEs hold what the dump had: two drifted, which the sweep repairs.
        assert drifted == (2 if disable_triggers else 0)
        target.execute("SELECT resync.enqueue_drifted()")
    drained(app_dsn, tmp_path)


def test_the_two_tables_restored_over_themselves_with_clean(conn, dsn, bindir, tmp_path):
    # What a DBA runs to put the catalogue back as a dump had it: pg_restore --clean drops the
    # two tables (no CASCADE) and makes them again. Nothing of ue-resync depends on their
    # columns; their triggers come back with them, from the dump.
    jobs = seeded(conn)
    for name in catalogue.ELEMENT_TRIGGERS:  # as on a subscriber that applies the elements' changes
        conn.execute(f"ALTER TABLE course_unit_elements ENABLE ALWAYS TRIGGER {name}")
    dump = tmp_path / "tables.dump"
    tables = ["-t", "course_units", "-t", "course_unit_elements"]
    tool(bindir, "pg_dump", "-Fc", *tables, "-f", str(dump), "-d", dsn)
    u = catalogue.unit(conn)  # made after the dump: gone after the restore
    catalogue.element(conn, u, credits=5)
    tool(bindir, "pg_restore", "--clean", "--if-exists", "-d", dsn, str(dump))
    assert conn.execute("SELECT count(*) FROM course_units WHERE id = %s", (u,)).fetchone() == (0,)
    assert installation.verify(conn) == []
    modes = catalogue.trigger_modes(conn)
    assert {modes[name] for name in catalogue.ELEMENT_TRIGGERS} == {"A"}, modes
    e = conn.execute("SELECT max(id) FROM course_unit_elements").fetchone()[0]  # the third UE
    conn.execute("UPDATE course_unit_elements SET credits = credits + 1 WHERE id = %s", (e,))
    assert catalogue.drift_count(conn) == 2  # the two the dump held drifted, not the edited one
    assert [r[0] for r in conn.execute("SELECT id FROM resync.pgqueuer ORDER BY id")] == [
        jobs["queued"],
        jobs["failed"],
    ]
    drained(dsn, tmp_path)


def test_a_restore_onto_a_cluster_without_the_roles(conn, dsn, bindir, tmp_path):
    seeded(conn)
    dump = tmp_path / "app.dump"
    tool(bindir, "pg_dump", "-Fc", "-f", str(dump), "-d", dsn)
    with replication.servers(bindir, 1) as [node]:
        with node.connect() as admin:
            admin.execute("CREATE DATABASE app")
        target = node.dsn("app")
        tool(bindir, "pg_restore", "--no-owner", "--no-privileges", "-d", target, str(dump))
        with psycopg.connect(target, autocommit=True) as restored:
            found = installation.verify(restored)
            assert "role resync_worker is missing" in found
            migrate.run(restored)
            assert installation.verify(restored) == []
            assert restored.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'resync\\_%'"
            ).fetchone() == (3,)
        drained(target, tmp_path)


def test_pg_upgrade_to_the_newer_server(tmp_path):
    old = replication.system_bindir()
    new = replication.embedded_bindir()
    if old is None:
        tools.unavailable(
            "pg_upgrade needs the system PostgreSQL's binaries (/usr/lib/postgresql/*/bin), "
            "which are not installed (apt-get install postgresql)"
        )
    # PostgreSQL 18's initdb turns data checksums on; the old cluster has none.
    with (
        replication.servers(old, 1) as [before],
        replication.servers(new, 1, "--no-data-checksums") as [after],
    ):
        with before.connect() as admin:
            admin.execute("CREATE DATABASE app")
        with before.connect("app") as app:
            catalogue.install(app)
            seeded(app)
            # A Debian 15.20 build of PostgreSQL stores a column option of its own, pg_attver,
            # on every column, which no other build knows: pg_upgrade's restore of any table
            # into the newer server fails on it ('unrecognized parameter "pg_attver"'). Removed
            # from the old cluster's columns (superuser, a catalog of this throwaway cluster);
            # nothing of ue-resync reads it.
            app.execute(
                "UPDATE pg_attribute SET attoptions = nullif(array(SELECT o FROM "
                "unnest(attoptions) o WHERE o NOT LIKE 'pg\\_attver=%'), '{}') "
                "WHERE attoptions::text LIKE '%pg\\_attver=%' AND attrelid >= 16384"
            )
        before.stop()
        after.stop()
        # pg_upgrade writes its logs in the current directory, as the postgres user.
        work = after.data.parent
        after.tool(
            "pg_upgrade",
            "-b",
            str(old),
            "-B",
            str(new),
            "-d",
            str(before.data),
            "-D",
            str(after.data),
            "-p",
            str(before.port),
            "-P",
            str(after.port),
            "--link",
            cwd=work,
        )
        after.start()
        with after.connect("app") as upgraded:
            migrate.run(upgraded)
            assert installation.verify(upgraded) == []
        drained(after.dsn("app"), tmp_path)
