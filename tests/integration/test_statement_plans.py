"""The statement path pairs an UPDATE's old and new rows by hash (sql/0014).

Transition tables have no statistics: from about 1,000 rows on, the planner sorted both of
them for a merge join (spilling to disk at 40,000 rows) rather than hash them, which it
prices as if there were only 200 distinct ids. auto_explain shows each statement the trigger
runs; the read of the transition tables is the one that starts with "WITH changed"."""

from __future__ import annotations

import psycopg
import pytest

from tests import catalog

UNITS = 300
PER_UNIT = 4  # 1,200 rows: past where the planner took a merge join without 0014


def _collect_plan(conn: psycopg.Connection, statement: str) -> str:
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    for name, value in (
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_nested_statements", "on"),
        ("auto_explain.log_level", "notice"),
        ("client_min_messages", "notice"),
    ):
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    with conn.transaction():
        conn.execute(statement)
        # Put back for the rest of the writer's transaction.
        row = conn.execute("SELECT current_setting('enable_mergejoin')").fetchone()
        assert row == ("on",)
    collect = [n for n in notices if n.startswith("duration:") and "WITH changed" in n]
    assert len(collect) == 1, notices
    return collect[0]


@pytest.mark.parametrize("mode", ["inline", "deferred"])
def test_a_bulk_update_pairs_its_rows_by_hash(conn, mode):
    conn.execute(
        "INSERT INTO course_units (code, name) "
        "SELECT 'P' || i, 'plan ' || i FROM generate_series(1, %s) i",
        (UNITS,),
    )
    conn.execute(
        "INSERT INTO course_unit_elements (course_unit_id, code, name, credits) "
        "SELECT u.id, 'E' || u.id || '_' || k, 'e', 1 "
        "FROM course_units u CROSS JOIN generate_series(1, %s) k",
        (PER_UNIT,),
    )
    conn.execute("SELECT set_config('ue_resync.mode', %s, false)", (mode,))

    plan = _collect_plan(conn, "UPDATE course_unit_elements SET credits = credits + 1")

    assert "Merge Join" not in plan
    assert "Hash Join" in plan and "Named Tuplestore Scan" in plan
    # And the statement did its work.
    if mode == "inline":
        assert catalog.drift_count(conn) == 0
        assert conn.execute("SELECT DISTINCT credits FROM course_units").fetchall() == [(8,)]
    else:
        assert len(catalog.jobs(conn)) == UNITS
