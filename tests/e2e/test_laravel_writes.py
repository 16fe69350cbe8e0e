"""Every way the Laravel application writes elements, through Eloquent in a real PHP process:
each UE is consistent when the writer commits, or has a resync queued."""

from __future__ import annotations

from decimal import Decimal

import pytest

from support import catalogue

pytestmark = [pytest.mark.e2e, pytest.mark.other_programs]


def consistent(conn, *units: int) -> None:
    """No drift anywhere, and no job left behind by an inline write."""
    assert conn.execute("SELECT course_unit_id FROM resync.drift").fetchall() == []
    assert catalogue.jobs(conn) == []
    for u in units:
        assert catalogue.read_unit(conn, u)["last_element_sync"] is not None


@pytest.fixture
def unit(laravel):
    """A UE with two elements, both created through Eloquent."""
    u = laravel.call("create_unit")
    e1 = laravel.call("create_element", unit=u, credits=3, cm=10, td=5, tp=5)
    e2 = laravel.call("create_element", unit=u, credits=2, cm=4, td=4, tp=2)
    return u, e1, e2


def test_create(conn, unit):
    u, _, _ = unit
    assert catalogue.totals(conn, u) == (5, 14, 9, 7, 30, 2)
    consistent(conn, u)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("credits", 6, (8, 14, 9, 7, 30, 2)),
        ("hours_cm", 20, (5, 24, 9, 7, 30, 2)),  # hours_total is its own column
        ("hours_td", 1, (5, 14, 5, 7, 30, 2)),
        ("hours_tp", 0, (5, 14, 9, 2, 30, 2)),
        ("hours_total", 40, (5, 14, 9, 7, 50, 2)),
        ("status", "inactive", (2, 4, 4, 2, 10, 1)),
    ],
)
def test_update_of_each_counted_field(laravel, conn, unit, column, value, expected):
    u, e1, _ = unit
    laravel.call("update_element", id=e1, set={column: value})
    assert catalogue.totals(conn, u) == tuple(Decimal(v) for v in expected)
    consistent(conn, u)


def test_status_back_to_active(laravel, conn, unit):
    u, e1, _ = unit
    laravel.call("update_element", id=e1, set={"status": "archived"})
    laravel.call("update_element", id=e1, set={"status": "active"})
    assert catalogue.totals(conn, u) == (5, 14, 9, 7, 30, 2)
    consistent(conn, u)


def test_move_to_another_unit(laravel, conn, unit):
    u, e1, _ = unit
    other = laravel.call("create_unit")
    laravel.call("update_element", id=e1, set={"course_unit_id": other})
    assert catalogue.totals(conn, u) == (2, 4, 4, 2, 10, 1)
    assert catalogue.totals(conn, other) == (3, 10, 5, 5, 20, 1)
    consistent(conn, u, other)


def test_soft_delete_restore_force_delete(laravel, conn, unit):
    u, e1, _ = unit
    laravel.call("delete_element", id=e1)
    assert catalogue.totals(conn, u) == (2, 4, 4, 2, 10, 1)
    assert conn.execute(
        "SELECT deleted_at IS NOT NULL FROM course_unit_elements WHERE id = %s", (e1,)
    ).fetchone() == (True,)
    consistent(conn, u)

    laravel.call("restore_element", id=e1)
    assert catalogue.totals(conn, u) == (5, 14, 9, 7, 30, 2)
    consistent(conn, u)

    laravel.call("force_delete_element", id=e1)
    assert (
        conn.execute("SELECT count(*) FROM course_unit_elements WHERE id = %s", (e1,)).fetchone()[0]
        == 0
    )
    assert catalogue.totals(conn, u) == (2, 4, 4, 2, 10, 1)
    consistent(conn, u)


def test_force_delete_of_a_soft_deleted_element_changes_nothing(laravel, conn, unit):
    u, e1, _ = unit
    laravel.call("delete_element", id=e1)
    laravel.call("force_delete_element", id=e1)
    assert catalogue.totals(conn, u) == (2, 4, 4, 2, 10, 1)
    consistent(conn, u)


def test_query_builder_update_over_thousands_of_rows(laravel, conn):
    units = [laravel.call("create_unit") for _ in range(4)]
    assert laravel.call("insert_many", units=units, per_unit=750) == 3000
    assert [catalogue.totals(conn, u)[5] for u in units] == [750] * 4
    affected = laravel.call("mass_update", units=units[:3], set={"credits": 2, "hours_tp": 5})
    assert affected == 2250
    for u in units[:3]:
        assert catalogue.totals(conn, u) == (1500, 750, 750, 3750, 2250, 750)
    assert catalogue.totals(conn, units[3]) == (750, 750, 750, 750, 2250, 750)
    consistent(conn, *units)


def test_transaction_that_throws_changes_nothing_and_queues_nothing(laravel, conn, unit):
    u, e1, _ = unit
    before = catalogue.read_unit(conn, u)
    assert laravel.call("failing_transaction", id=e1, unit=u, set={"credits": 9}) == (
        "import aborted"
    )
    assert catalogue.read_unit(conn, u) == before
    assert (
        conn.execute(
            "SELECT count(*) FROM course_unit_elements WHERE course_unit_id = %s", (u,)
        ).fetchone()[0]
        == 2
    )
    consistent(conn, u)


def test_deferred_import_is_drained_by_the_daemon(laravel, conn, cli, unit):
    u, _, _ = unit
    ids = laravel.call("deferred_import", unit=u, count=50, credits=1, cm=1, td=1, tp=1)
    assert len(ids) == 50
    # Committed, not synced: one job for the UE, whatever the number of rows.
    assert catalogue.totals(conn, u) == (5, 14, 9, 7, 30, 2)
    [job] = catalogue.jobs(conn, u)
    assert job["status"] == "queued" and job["events"] == 50
    done = cli("work", "--stop-when-empty")
    assert done.returncode == 0, done.stderr
    assert catalogue.totals(conn, u) == (55, 64, 59, 57, 180, 52)
    assert catalogue.read_unit(conn, u)["last_job_sync"] is not None
    consistent(conn, u)
