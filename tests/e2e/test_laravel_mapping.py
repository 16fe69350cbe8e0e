"""A catalogue made by another university's Laravel migrations, with its own names
(tests/laravel/database/catalogue_fr: ects, volume_cm…, statut 'actif'/'inactif', soft deletes,
no hours_distribution, no last_job_sync), adopted through its mapping
(tests/fixtures/mapping_fr.toml); and the application's own ->change() migration on the default
catalogue with ue-resync installed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from support import processes
from tests.laravel.harness import Laravel, require_php
from tests.schema import objects

pytestmark = [pytest.mark.e2e, pytest.mark.other_programs]

MAPPING = Path(__file__).resolve().parents[1] / "fixtures" / "mapping_fr.toml"
TOTALS = "SELECT ects, volume_cm, volume_td, volume_tp, volume_total, nb_ecue"


@pytest.fixture
def fr(empty_dsn: str) -> Iterator[Laravel]:
    """The French catalogue, made by its Laravel migration, nothing of ue-resync yet."""
    app = Laravel(require_php(), empty_dsn)
    assert app.artisan("migrate", "--path=database/catalogue_fr")["ran"] == [
        "2021_01_01_000000_create_unites_enseignement_tables"
    ]
    yield app


def migrate(dsn: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return processes.run(dsn, "migrate", *args, cwd=tmp_path)


def totals(conn: psycopg.Connection, unit: int) -> tuple[Decimal, ...]:
    row = conn.execute(f"{TOTALS} FROM unites_enseignement WHERE id = %s", (unit,)).fetchone()
    assert row is not None
    return tuple(Decimal(v) for v in row)


def no_drift(conn: psycopg.Connection) -> None:
    assert conn.execute("SELECT course_unit_id, differences FROM resync.drift").fetchall() == []


def test_without_its_mapping_migrate_lists_the_differences_and_changes_nothing(
    fr, empty_dsn, tmp_path
):
    unit = fr.call("fr_create_unit")
    fr.call("fr_create_element", unit=unit, credits=4)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        before = objects(conn)
        rows = conn.execute(f"{TOTALS} FROM unites_enseignement").fetchall()
        done = migrate(empty_dsn, tmp_path)
        assert objects(conn) == before
        assert conn.execute(f"{TOTALS} FROM unites_enseignement").fetchall() == rows
    assert done.returncode == 1
    assert "do not match the mapping (2 difference(s)); nothing was changed" in done.stderr
    assert "table public.course_units does not exist (mapping units.table)" in done.stderr


def test_with_its_mapping_every_eloquent_write_keeps_the_units_right(fr, empty_dsn, tmp_path):
    # Data the application kept right before ue-resync: consistent, one inactive element.
    unit = fr.call("fr_create_unit")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE unites_enseignement SET ects = 3, volume_cm = 10, volume_td = 10, "
            "volume_tp = 10, volume_total = 30, nb_ecue = 1 WHERE id = %s",
            (unit,),
        )
    fr.call("fr_create_element", unit=unit, credits=3)
    fr.call("fr_create_element", unit=unit, credits=5, status="inactif")

    preview = migrate(empty_dsn, tmp_path, "--preview", "--mapping", str(MAPPING))
    assert preview.returncode == 0, preview.stderr
    assert "the first sync would change no course unit" in preview.stdout
    assert "add column public.unites_enseignement.derniere_synchro_job" in preview.stdout
    assert "no index of public.elements_constitutifs leads with unite_id" in preview.stdout
    installed = migrate(empty_dsn, tmp_path, "--mapping", str(MAPPING))
    assert installed.returncode == 0, installed.stderr

    other = fr.call("fr_create_unit")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        no_drift(conn)
        e1 = fr.call("fr_create_element", unit=unit, credits=2, cm=4, td=4, tp=2)
        assert totals(conn, unit) == (5, 14, 14, 12, 40, 2)
        for column, value, expected in [
            ("ects", 6, (9, 14, 14, 12, 40, 2)),
            ("volume_cm", 20, (9, 30, 14, 12, 40, 2)),  # the total is a column of its own
            ("volume_total", 50, (9, 30, 14, 12, 80, 2)),
            ("statut", "inactif", (3, 10, 10, 10, 30, 1)),
            ("statut", "actif", (9, 30, 14, 12, 80, 2)),
        ]:
            fr.call("fr_update_element", id=e1, set={column: value})
            assert totals(conn, unit) == tuple(Decimal(v) for v in expected), column
        fr.call("fr_delete_element", id=e1)  # soft delete
        assert totals(conn, unit) == (3, 10, 10, 10, 30, 1)
        fr.call("fr_restore_element", id=e1)
        assert totals(conn, unit)[0] == 9
        fr.call("fr_move_element", id=e1, to=other)
        assert (totals(conn, unit)[0], totals(conn, other)[0]) == (3, 6)
        fr.call("fr_force_delete_element", id=e1)
        assert totals(conn, other) == (0, 0, 0, 0, 0, 0)
        assert fr.call("fr_insert_many", units=[unit, other], per_unit=3) == 6
        assert (totals(conn, unit)[5], totals(conn, other)[5]) == (4, 3)
        assert fr.call("fr_mass_update", units=[unit, other], set={"ects": 2}) == 8
        assert (totals(conn, unit)[0], totals(conn, other)[0]) == (8, 6)
        no_drift(conn)
        assert conn.execute(
            "SELECT count(*) FROM unites_enseignement WHERE derniere_synchro IS NULL"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone() == (0,)
        # ue-resync's own sync, as the daemon runs it, writes the column it added.
        synced = processes.run(empty_dsn, "sync", str(unit), "--json", cwd=tmp_path)
        assert synced.returncode == 0, synced.stderr
        assert conn.execute(
            "SELECT derniere_synchro_job IS NOT NULL FROM unites_enseignement WHERE id = %s",
            (unit,),
        ).fetchone() == (True,)


def test_the_applications_change_migration_runs_with_ue_resync_installed(laravel, conn):
    unit = laravel.call("create_unit")
    laravel.call("create_element", unit=unit, credits=3)
    # Laravel's Migrator, Doctrine DBAL's ALTER COLUMN … TYPE on both tables' credits.
    assert laravel.artisan("migrate", "--path=database/changes")["ran"] == [
        "2022_01_01_000000_widen_credits"
    ]
    assert conn.execute(
        "SELECT numeric_precision FROM information_schema.columns "
        "WHERE table_name IN ('course_units', 'course_unit_elements') AND column_name = 'credits'"
    ).fetchall() == [(7,), (7,)]
    laravel.call("create_element", unit=unit, credits=12345.5)
    assert conn.execute("SELECT credits FROM course_units WHERE id = %s", (unit,)).fetchone() == (
        Decimal("12348.50"),
    )
    assert conn.execute("SELECT count(*) FROM resync.drift").fetchone() == (0,)
