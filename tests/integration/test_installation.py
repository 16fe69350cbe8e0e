"""migrate checks the catalogue, not its ledger: what a DBA's tools take away (grants, triggers
dropped with a table, a function dropped or rewritten by another tool) is listed by
`migrate --verify`, raised by the alert `installation`, and put back by `migrate`; what a DBA
added or chose (grants to other roles, firing modes) is left as it is. And TRUNCATE."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from support import catalogue
from ue_resync import installation, mapping, migrate, scripts
from ue_resync.catalogue import create_tables


def alerts(conn: psycopg.Connection) -> dict[str, dict[str, str]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return {a["name"]: a for a in cur.execute("SELECT * FROM resync.alerts").fetchall()}


def repaired(conn: psycopg.Connection, *expected: str) -> None:
    """verify lists `expected` (each a part of a line), migrate repairs them, verify is clean."""
    found = installation.verify(conn)
    for part in expected:
        assert any(part in line for line in found), (part, found)
    assert alerts(conn)["installation"]["severity"] == "critical"
    outcome = migrate.run(conn)
    assert set(outcome.repaired) == set(found)
    assert installation.verify(conn) == []
    assert "installation" not in alerts(conn)


def row_function_calls(conn: psycopg.Connection) -> int:
    """resync.on_element_row's calls so far, this session's included (flushed first)."""
    conn.execute("SELECT pg_stat_force_next_flush()")  # flushed as the session goes idle
    conn.execute("SELECT pg_stat_clear_snapshot()")
    found = conn.execute(
        "SELECT calls FROM pg_stat_user_functions "
        "WHERE schemaname = 'resync' AND funcname = 'on_element_row'"
    ).fetchone()
    return found[0] if found else 0


def test_the_subscribers_triggers_fire_for_the_apply_worker_only(conn):
    replica = {k: v for k, v in catalogue.trigger_modes(conn).items() if "replica" in k}
    assert replica == {
        "course_unit_elements_resync_replica": "R",
        "course_unit_elements_resync_replica_truncate": "R",
    }


def test_a_fresh_install_verifies_clean(conn):
    assert installation.verify(conn) == []
    assert installation.differences(conn, mapping.DEFAULT) == []


def test_grants_lost_in_a_restore_are_given_back(conn, login):
    worker = login("worker", "resync_worker")
    # What pg_restore --no-privileges leaves: none of ue-resync's grants.
    conn.execute(
        "REVOKE ALL ON ALL TABLES IN SCHEMA resync "
        "FROM resync_worker, resync_monitor, resync_requester"
    )
    conn.execute("REVOKE USAGE ON SCHEMA resync FROM resync_worker, resync_monitor")
    with worker.connect() as denied, pytest.raises(psycopg.errors.InsufficientPrivilege):
        denied.execute("SELECT count(*) FROM resync.pgqueuer")
    repaired(
        conn,
        "grant table resync.pgqueuer to resync_worker is missing",
        "grant schema resync to resync_monitor is missing",
    )
    with worker.connect() as allowed:
        assert allowed.execute("SELECT count(*) FROM resync.pgqueuer").fetchone() == (0,)


def test_a_dbas_own_grants_and_indexes_are_left_alone(conn, login):
    reader = login("reader")
    conn.execute(f"GRANT USAGE ON SCHEMA resync TO {reader.name}")
    conn.execute(f"GRANT SELECT ON resync.job_runs TO {reader.name}")
    conn.execute("CREATE INDEX job_runs_reason_idx ON resync.job_runs (reason)")
    assert installation.verify(conn) == []
    conn.execute("REVOKE ALL ON resync.pgqueuer FROM resync_worker")
    migrate.run(conn)
    with reader.connect() as still:
        assert still.execute("SELECT count(*) FROM resync.job_runs").fetchone() == (0,)
    assert conn.execute("SELECT to_regclass('resync.job_runs_reason_idx')").fetchone()[0]


def test_a_function_dropped_by_hand_is_put_back(conn):
    conn.execute("DROP FUNCTION resync.request(bigint, text, interval)")
    repaired(conn, "function resync.request(bigint,text,interval) is missing")
    u = catalogue.unit(conn)
    assert conn.execute("SELECT resync.request(%s)", (u,)).fetchone()[0] is not None


def test_a_function_rewritten_by_another_tool_is_put_back(conn):
    # What `pgq upgrade` does without PGQUEUER_CHANNEL: the queue's trigger notifies its channel.
    body = conn.execute(
        "SELECT pg_get_functiondef('resync.fn_pgqueuer_changed()'::regprocedure)"
    ).fetchone()[0]
    conn.execute(body.replace("'ue_resync'", "'ch_pgqueuer'"))
    repaired(conn, "function resync.fn_pgqueuer_changed() differs from what migrate installed")
    assert (
        "'ue_resync'"
        in conn.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'fn_pgqueuer_changed'"
        ).fetchone()[0]
    )


def test_the_tables_dropped_and_made_again_get_their_triggers_back(conn):
    conn.execute("DROP TABLE course_unit_elements, course_units CASCADE")
    create_tables(conn)  # the application's migrations, run again
    found = installation.verify(conn)
    assert {
        f"trigger {t} on public.course_unit_elements is missing" for t in catalogue.ELEMENT_TRIGGERS
    } <= (set(found))
    migrate.run(conn)
    assert installation.verify(conn) == []
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=4)
    assert catalogue.totals(conn, u)[0] == 4


def test_firing_modes_survive_every_reapply(conn):
    for name in catalogue.ELEMENT_TRIGGERS:
        conn.execute(f"ALTER TABLE course_unit_elements ENABLE ALWAYS TRIGGER {name}")
    conn.execute("ALTER TABLE resync.requests DISABLE TRIGGER requests_enqueue")
    conn.execute("UPDATE resync.schema_definitions SET checksum = 'old'")  # an upgrade
    assert [s.name for s in migrate.run(conn).scripts][1:-3] == list(scripts.DEFINITIONS)
    assert {catalogue.trigger_modes(conn)[name] for name in catalogue.ELEMENT_TRIGGERS} == {"A"}
    assert conn.execute(
        "SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'requests_enqueue'"
    ).fetchone() == ("D",)
    assert installation.verify(conn) == []


def test_triggers_enabled_differently_are_reported_not_changed(conn):
    conn.execute("ALTER TABLE course_unit_elements DISABLE TRIGGER course_unit_elements_resync_row")
    [line] = installation.verify(conn)
    assert "course_unit_elements_resync_row disabled" in line and "they work together" in line
    outcome = migrate.run(conn)
    assert outcome.warnings == [f"not repaired: {line}"]
    assert catalogue.trigger_modes(conn)["course_unit_elements_resync_row"] == "D"


def test_enable_trigger_all_puts_the_replica_triggers_back_to_replica(conn):
    # pg_restore --data-only --disable-triggers ends each table with ENABLE TRIGGER ALL.
    conn.execute("ALTER TABLE course_unit_elements DISABLE TRIGGER ALL")
    conn.execute("ALTER TABLE course_unit_elements ENABLE TRIGGER ALL")
    assert catalogue.trigger_modes(conn)["course_unit_elements_resync_replica"] == "O"
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=2)
    conn.execute("SET track_functions = 'pl'")
    before = row_function_calls(conn)
    conn.execute("UPDATE course_unit_elements SET credits = 3 WHERE id = %s", (e,))
    # Kept idle by its WHEN: the row function is called once, by the row trigger.
    assert row_function_calls(conn) == before + 1
    assert catalogue.totals(conn, u)[0] == 3
    repaired(
        conn,
        "trigger course_unit_elements_resync_replica on public.course_unit_elements fires in "
        "every session",
        "course_unit_elements_resync_replica_truncate on public.course_unit_elements fires",
    )
    assert catalogue.trigger_modes(conn)["course_unit_elements_resync_replica"] == "R"
    assert catalogue.trigger_modes(conn)["course_unit_elements_resync_replica_truncate"] == "R"


def test_a_disabled_replica_trigger_is_the_dbas(conn):
    conn.execute(
        "ALTER TABLE course_unit_elements DISABLE TRIGGER course_unit_elements_resync_replica"
    )
    assert installation.verify(conn) == []
    conn.execute("UPDATE resync.schema_definitions SET checksum = 'old'")  # an upgrade
    migrate.run(conn)
    assert catalogue.trigger_modes(conn)["course_unit_elements_resync_replica"] == "D"


# --- TRUNCATE ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["inline", "deferred"])
def test_truncating_the_elements_leaves_every_unit_right(conn, mode):
    units = [catalogue.unit(conn) for _ in range(3)]
    for u in units[:2]:
        catalogue.element(conn, u, credits=2)
    conn.execute("UPDATE course_units SET auto_sync_enabled = false WHERE id = %s", (units[1],))
    with conn.transaction():
        conn.execute("SELECT set_config('ue_resync.mode', %s, true)", (mode,))
        conn.execute("TRUNCATE course_unit_elements")
    if mode == "inline":
        assert catalogue.totals(conn, units[0]) == (0, 0, 0, 0, 0, 0)
        assert catalogue.jobs(conn) == []
    else:
        [job] = catalogue.jobs(conn)
        assert job["headers"] == {
            "course_unit_id": str(units[0]),
            "reason": "deferred_after_truncated",
        }
    # The UE left out of automatic syncs keeps what it had.
    assert catalogue.totals(conn, units[1])[0] == 2
    if mode == "deferred":
        conn.execute("SELECT resync.sync_now(%s)", (units[0],))
    assert catalogue.drift_count(conn) == 0


def test_truncating_the_units_with_cascade_leaves_nothing_behind(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=2)
    conn.execute("TRUNCATE course_units CASCADE")
    assert catalogue.jobs(conn) == []
    assert conn.execute("SELECT count(*) FROM resync.sync_failures").fetchone() == (0,)
