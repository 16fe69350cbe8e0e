"""Plans of bulk statements (sql/definitions/element_triggers.sql and sync.sql).

auto_explain shows each statement the triggers run. Transition tables have no statistics:
from about 1,000 rows on, the planner sorted both of them for a merge join (spilling to disk at
40,000 rows) rather than hash them, which it prices as if there were only 200 distinct ids. And
resync.sync_units' generic plan, made for 10 UEs, looks up each of thousands one by one: from
2,000 UEs on, it plans the call with the actual array (a constant in the plan, not $1)."""

from __future__ import annotations

import pytest

from support import catalogue
from tests.deferral import bulk_elements, bulk_units
from tests.explain import nested_plans

# The writer's planner settings, as they were: the triggers put back what they change.
UNCHANGED = (
    "SELECT 'ok' WHERE current_setting('enable_mergejoin') = 'on' "
    "AND current_setting('plan_cache_mode') = 'auto'"
)


@pytest.mark.parametrize("mode", ["inline", "deferred"])
def test_a_bulk_update_pairs_its_rows_by_hash(conn, mode):
    units, per_unit = 300, 4  # 1,200 rows: past where the planner took a merge join
    bulk_units(conn, units)
    bulk_elements(conn, per_unit)  # through the triggers; element k has k credits
    conn.execute("SELECT set_config('ue_resync.mode', %s, false)", (mode,))

    plans = nested_plans(
        conn, "UPDATE course_unit_elements SET credits = credits + 1", check=UNCHANGED
    )

    collect = [p for p in plans if "WITH changed" in p]
    assert len(collect) == 1, plans
    assert "Merge Join" not in collect[0]
    assert "Hash Join" in collect[0] and "Named Tuplestore Scan" in collect[0]
    # And the statement did its work.
    if mode == "inline":
        assert catalogue.drift_count(conn) == 0
        # 1 + 2 + 3 + 4 credits, each element's one more
        assert conn.execute("SELECT DISTINCT credits FROM course_units").fetchall() == [(14,)]
    else:
        assert len(catalogue.jobs(conn)) == units


@pytest.mark.parametrize(("units", "custom"), [(1999, False), (2000, True)])
def test_sync_units_plans_a_call_for_2000_units_with_its_array(conn, units, custom):
    bulk_units(conn, units)
    bulk_elements(conn, 1)

    plans = nested_plans(
        conn, "UPDATE course_unit_elements SET credits = credits + 1", check=UNCHANGED
    )

    # sync_units' statements: its lock, then its write (the one that reads the elements).
    sync = [p for p in plans if "FOR NO KEY UPDATE" in p or "course_unit_elements e" in p]
    assert len(sync) == 2, plans
    for plan in sync:
        assert ("ANY ($1)" not in plan) is custom, plan
    assert catalogue.drift_count(conn) == 0
    assert conn.execute("SELECT DISTINCT credits FROM course_units").fetchall() == [(2,)]
