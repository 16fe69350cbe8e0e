"""ue-resync on a database it did not create: the mapping declares the application's names,
migrate checks the tables against it and refuses with every difference and nothing changed,
a first install that would change UEs waits for the operator's word, and the application's own
DDL keeps working with ue-resync installed."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from support import catalogue
from tests.schema import DEFINITIONS_STEPS, objects
from ue_resync import ledger, mapping, migrate, preflight, scripts

FR = mapping.build(
    {
        "units": {"credits": "ects", "hours_distribution": False, "last_job_sync": "synchro_job"},
        "elements": {
            "credits": "ects",
            "status": "statut",
            "counted": ["actif"],
            "not_counted": ["inactif"],
        },
    }
)


def refused(conn: psycopg.Connection, declared: mapping.Mapping | None = None) -> str:
    """migrate's refusal, having checked that it changed nothing."""
    before = objects(conn)
    rows = conn.execute("SELECT count(*) FROM course_units").fetchone() if _has_units(conn) else 0
    with pytest.raises(migrate.MigrationError) as caught:
        migrate.apply(conn, declared)
    assert objects(conn) == before
    if rows:
        assert conn.execute("SELECT count(*) FROM course_units").fetchone() == rows
    return str(caught.value)


def _has_units(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('public.course_units')").fetchone()[0] is not None


def _unit_with(conn: psycopg.Connection, status: str) -> int:
    u = catalogue.unit(conn, credits=6, hours_total=60, elements_count=3)
    for _ in range(3):
        conn.execute(
            "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, hours_total, "
            "status) VALUES (%s, 'e', 'e', 2, 20, %s)",
            (u, status),
        )
    return u


# --- the refusals ----------------------------------------------------------------------------


def test_unknown_status_values_are_refused_with_their_counts(app_dsn):
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        _unit_with(conn, "actif")
        message = refused(conn)
    assert "nothing was changed" in message
    assert '"actif" (3 rows)' in message
    assert "elements.counted or elements.not_counted" in message


def test_a_column_under_another_name_is_refused_and_never_added(app_dsn):
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE course_unit_elements RENAME COLUMN credits TO ects")
        conn.execute("ALTER TABLE course_units RENAME COLUMN credits TO ects")
        message = refused(conn)
    assert "public.course_unit_elements.credits does not exist (mapping elements.credits)" in (
        message
    )
    assert "public.course_units.credits does not exist (mapping units.credits)" in message


def test_a_database_without_the_tables_is_refused_and_nothing_is_created(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        message = refused(conn)
        assert conn.execute("SELECT to_regnamespace('resync')").fetchone() == (None,)
    assert "table public.course_units does not exist (mapping units.table)" in message
    assert "table public.course_unit_elements does not exist (mapping elements.table)" in message


def test_every_difference_is_listed_at_once(app_dsn):
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE course_units DROP COLUMN elements_count")
        conn.execute("ALTER TABLE course_units ALTER COLUMN hours_cm TYPE text")
        conn.execute("ALTER TABLE course_unit_elements RENAME COLUMN deleted_at TO removed_at")
        message = refused(conn)
    assert "(3 difference(s))" in message
    assert "public.course_units.elements_count does not exist" in message
    assert "public.course_units.hours_cm is text, not a number (mapping units.hours_cm)" in message
    assert "public.course_unit_elements.deleted_at does not exist" in message


def test_a_wrong_mapping_is_refused_before_the_database_is_read():
    with pytest.raises(mapping.MappingError) as caught:
        mapping.build(
            {
                "units": {"credit": "ects", "hours_cm": "x", "hours_td": "x", "id": False},
                "elements": {"counted": ["a"], "not_counted": ["a"]},
                "other": {},
            }
        )
    message = str(caught.value)
    for part in (
        "unknown section [other]",
        "unknown key units.credit",
        "units.id is required",
        "both list 'a'",
    ):
        assert part in message


# --- preview and the first install -----------------------------------------------------------


def test_the_preview_says_what_the_first_sync_would_write(app_dsn):
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        u = _unit_with(conn, "actif")
        conn.execute("UPDATE course_unit_elements SET deleted_at = now() WHERE id = 1")
        declared = mapping.build({"elements": {"not_counted": ["actif"]}})
        report = preflight.check(conn, declared)
        assert report.problems == []
        changes = preflight.preview(conn, declared, report)
    assert changes.per_column == {"credits": 1, "hours_total": 1, "elements_count": 1}
    line = preflight.describe(changes.changes[0], changes.counted)
    assert line.startswith(f"UE {u} (")
    assert "credits 6 → 0, hours_total 60 → 0" in line
    assert "elements_count 3 → 0" in line
    assert "0 of 3 elements counted (status 'actif': 2; soft-deleted: 1; counted: 'active')" in (
        line
    )


def test_a_first_install_that_changes_units_waits_for_the_operator(app_dsn):
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        u = _unit_with(conn, "active")
        conn.execute("UPDATE course_units SET hours_total = 59 WHERE id = %s", (u,))
        message = refused(conn)
        assert "1 course unit(s) would change at their first sync" in message
        assert "hours_total 59 → 60" in message
        assert "ue-resync migrate --preview" in message and "--accept-resync" in message

        outcome = migrate.run(conn, accept_resync=True)
        assert outcome.queued == 1
        assert [j["headers"]["course_unit_id"] for j in catalogue.jobs(conn)] == [str(u)]
        assert ledger.check_current(conn) == scripts.code_schema_version()


def test_an_upgrade_reports_drift_and_goes_on(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        u = catalogue.unit(conn)
        catalogue.element(conn, u)
        conn.execute("UPDATE course_units SET credits = 9 WHERE id = %s", (u,))
        conn.execute("UPDATE resync.schema_definitions SET checksum = 'old'")
        outcome = migrate.run(conn)
        assert [s.name for s in outcome.scripts] == DEFINITIONS_STEPS
        assert outcome.queued is None
        assert [r[0] for r in conn.execute("SELECT course_unit_id FROM resync.drift")] == [u]


# --- the mapping, installed ------------------------------------------------------------------


def test_a_catalogue_with_its_own_names_is_installed_from_its_mapping(app_dsn):
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        for table in ("course_units", "course_unit_elements"):
            conn.execute(f"ALTER TABLE {table} RENAME COLUMN credits TO ects")
        conn.execute("ALTER TABLE course_unit_elements RENAME COLUMN status TO statut")
        conn.execute("ALTER TABLE course_unit_elements ALTER COLUMN statut SET DEFAULT 'actif'")
        conn.execute("ALTER TABLE course_units DROP COLUMN hours_distribution")
        conn.execute("ALTER TABLE course_units DROP COLUMN last_job_sync")

        outcome = migrate.run(conn, FR)
        assert "public.course_units.synchro_job" in [s.name for s in outcome.scripts]
        assert ledger.installed_mapping(conn) == FR
        assert ledger.check_current(conn) == scripts.code_schema_version(FR)
        # Readable from psql, every key.
        rows = dict(conn.execute("SELECT key, value FROM resync.mapping").fetchall())
        assert rows["units.credits"] == "ects" and rows["units.hours_distribution"] is None
        assert rows["elements.counted"] == ["actif"]

        u = catalogue.unit(conn)
        for ects in (2, 3):
            conn.execute(
                "INSERT INTO course_unit_elements (course_unit_id, code, name, ects, hours_cm) "
                "VALUES (%s, 'e', 'e', %s, 10)",
                (u, ects),
            )
        conn.execute(
            "INSERT INTO course_unit_elements (course_unit_id, code, name, ects, statut)"
            " VALUES (%s, 'x', 'x', 7, 'inactif')",
            (u,),
        )
        assert conn.execute(
            "SELECT ects, hours_cm, elements_count FROM course_units WHERE id = %s", (u,)
        ).fetchone() == (5, 20, 2)
        assert conn.execute("SELECT count(*) FROM resync.drift").fetchone() == (0,)
        # The daemon's sync writes the added column, and reports by the application's names.
        assert conn.execute("SELECT resync.sync_now(%s)", (u,)).fetchone()[0]["changes"] == {}
        conn.execute("UPDATE course_units SET ects = 1 WHERE id = %s", (u,))
        assert conn.execute("SELECT differences FROM resync.drift").fetchone() == (
            {"ects": [1, 5]},
        )
        assert conn.execute(
            "SELECT synchro_job IS NOT NULL FROM course_units WHERE id = %s", (u,)
        ).fetchone() == (True,)

        # A later migrate without a mapping keeps the installed one: nothing to do.
        assert migrate.apply(conn) == []


def test_a_mapping_change_is_a_definitions_change(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        u = catalogue.unit(conn)
        catalogue.element(conn, u, credits=2, status="active")
        catalogue.element(conn, u, credits=3, status="draft")
        widened = mapping.build(
            {"elements": {"counted": ["active", "draft"], "not_counted": ["inactive"]}}
        )
        outcome = migrate.run(conn, widened)
        assert [s.name for s in outcome.scripts] == DEFINITIONS_STEPS
        assert outcome.mapping_changes == [
            'elements.counted: ["active"] → ["active", "draft"]',
            'elements.not_counted: ["inactive", "draft", "archived"] → ["inactive"]',
        ]
        # The new rule counts drafts: the UE drifted until its resync.
        assert conn.execute("SELECT differences FROM resync.drift").fetchone() == (
            {
                "credits": [2, 5],
                "hours_cm": [10, 20],
                "hours_td": [10, 20],
                "hours_tp": [10, 20],
                "hours_total": [30, 60],
                "elements_count": [1, 2],
            },
        )
        conn.execute("SELECT resync.sync_now(%s)", (u,))
        assert catalogue.totals(conn, u)[0] == Decimal(5)
        # Only the list of values known not to count: no definition changes, the record does.
        narrowed = mapping.build({"elements": {"counted": ["active", "draft"], "not_counted": []}})
        assert [s.name for s in migrate.run(conn, narrowed).scripts] == ["mapping"]
        assert ledger.installed_mapping(conn) == narrowed


def test_the_mapping_as_toml_reads_back_the_same(tmp_path):
    path = tmp_path / "mapping.toml"
    path.write_text(FR.to_toml(), "utf-8")
    assert mapping.load(path) == FR


# --- the application's own DDL ---------------------------------------------------------------


def test_counted_columns_change_type_with_ue_resync_installed(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=2)
    # What a Laravel migration's ->change() runs: no view or rule of ue-resync pins the column.
    conn.execute("ALTER TABLE course_unit_elements ALTER COLUMN credits TYPE numeric(7,2)")
    conn.execute("ALTER TABLE course_units ALTER COLUMN credits TYPE numeric(7,2)")
    conn.execute("ALTER TABLE course_units ALTER COLUMN hours_distribution TYPE json")
    catalogue.element(conn, u, credits=Decimal("12345.5"))
    assert catalogue.totals(conn, u)[0] == Decimal("12347.5")
    assert conn.execute("SELECT count(*) FROM resync.drift").fetchone() == (0,)
    assert migrate.apply(conn) == []
