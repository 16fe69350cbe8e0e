"""The single-row fast path (sql/definitions/element_triggers.sql): which trigger does the work for
which statement, and the optimistic one-statement sync falling back to the locking sync when the UE
row moved on."""

from __future__ import annotations

import threading
from decimal import Decimal

import psycopg

from support import catalogue
from tests.deferral import wait_until_blocked


def _route(conn: psycopg.Connection, statement: str, *params: object) -> str:
    """Run `statement` in a transaction; which trigger functions ran for it: 'row' (the row
    path), 'statement' (the statement path), 'row+statement' (a statement of several rows: its
    first row's function is called too, and returns at once), '' (none), read from the
    transaction's function counts."""
    with conn.transaction():
        conn.execute("SET LOCAL track_functions = 'pl'")
        conn.execute(statement, params)
        calls = dict(
            conn.execute(
                "SELECT funcname::text, calls FROM pg_stat_xact_user_functions "
                "WHERE schemaname = 'resync' "
                "AND funcname IN ('on_element_row', 'on_element_statement')"
            ).fetchall()
        )
    return "+".join(
        path
        for path, fn in (("row", "on_element_row"), ("statement", "on_element_statement"))
        if calls.get(fn)
    )


def _consistent(conn: psycopg.Connection, unit_id: int) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM resync.drift WHERE course_unit_id = %s", (unit_id,)
    ).fetchone()
    return row is not None and row[0] == 0


def test_a_single_row_statement_takes_the_row_path(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=3)
    assert _route(conn, "UPDATE course_unit_elements SET credits = 5 WHERE id = %s", e) == "row"
    assert catalogue.totals(conn, u)[0] == Decimal(5)
    assert _route(conn, "DELETE FROM course_unit_elements WHERE id = %s", e) == "row"
    assert catalogue.totals(conn, u)[5] == 0
    assert catalogue.jobs(conn) == []


def test_a_multi_row_statement_takes_the_statement_path(conn):
    u = catalogue.unit(conn)
    a = catalogue.element(conn, u, credits=1)
    b = catalogue.element(conn, u, credits=2)
    route = _route(
        conn, "UPDATE course_unit_elements SET credits = credits + 10 WHERE id IN (%s, %s)", a, b
    )
    assert route == "row+statement"
    assert catalogue.totals(conn, u)[0] == Decimal(23)
    assert _consistent(conn, u)


def test_statements_run_by_one_function_each_take_their_path(conn):
    # Inside one function every statement has the same statement_timestamp(): each counts its
    # rows afresh (the start trigger), and every UE ends consistent.
    u1, u2, u3 = catalogue.unit(conn), catalogue.unit(conn), catalogue.unit(conn)
    e1, e2 = catalogue.element(conn, u1, credits=1), catalogue.element(conn, u2, credits=1)
    e3, e4 = catalogue.element(conn, u3, credits=1), catalogue.element(conn, u3, credits=1)
    route = _route(
        conn,
        f"""
        DO $$
        BEGIN
            UPDATE course_unit_elements SET credits = 4 WHERE id = {e1};
            UPDATE course_unit_elements SET credits = 6 WHERE id = {e2};
            UPDATE course_unit_elements SET credits = 2 WHERE id IN ({e3}, {e4});
            UPDATE course_unit_elements SET credits = 8 WHERE id = {e1};
        END $$
        """,
    )
    assert route == "row+statement"
    assert catalogue.totals(conn, u1)[0] == Decimal(8)
    assert catalogue.totals(conn, u2)[0] == Decimal(6)
    assert catalogue.totals(conn, u3)[0] == Decimal(4)


def test_a_statement_run_by_a_function_in_another_statements_query(conn):
    # The function writes the table while the outer statement writes its rows: both take the
    # statement path, and every UE ends consistent.
    u1, u2 = catalogue.unit(conn), catalogue.unit(conn)
    outer = catalogue.element(conn, u1, credits=1)
    inner = catalogue.element(conn, u2, credits=1)
    conn.execute(
        f"""
        CREATE FUNCTION touch_other(n numeric) RETURNS numeric LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE course_unit_elements SET credits = 7 WHERE id = {inner};
            RETURN n;
        END $$
        """
    )
    conn.execute("UPDATE course_unit_elements SET credits = touch_other(3) WHERE id = %s", (outer,))
    assert [catalogue.totals(conn, u)[0] for u in (u1, u2)] == [3, 7]
    assert catalogue.drift_count(conn) == 0


def test_a_row_moved_between_units_syncs_both_on_the_row_path(conn):
    u1, u2 = catalogue.unit(conn), catalogue.unit(conn)
    e = catalogue.element(conn, u1, credits=3)
    catalogue.element(conn, u2, credits=1)
    route = _route(conn, "UPDATE course_unit_elements SET course_unit_id = %s WHERE id = %s", u2, e)
    assert route == "row"
    assert catalogue.totals(conn, u1)[0] == 0 and catalogue.totals(conn, u2)[0] == Decimal(4)
    with conn.transaction():
        conn.execute("SET LOCAL ue_resync.mode = 'deferred'")
        conn.execute("UPDATE course_unit_elements SET course_unit_id = %s WHERE id = %s", (u1, e))
    assert sorted(j["headers"]["course_unit_id"] for j in catalogue.jobs(conn)) == sorted(
        [str(u1), str(u2)]
    )


def test_a_statement_run_by_the_applications_own_trigger_has_a_key_of_its_own(conn):
    # The application's AFTER ROW trigger (named to fire before ue-resync's) moves a sibling
    # element while the first statement's events fire: its statement shares the first one's
    # statement_timestamp, not its trigger depth, and each statement's UEs are synced.
    u1, u2, u3 = (catalogue.unit(conn) for _ in range(3))
    moved = catalogue.element(conn, u1, credits=3)
    sibling = catalogue.element(conn, u2, credits=5)
    conn.execute(
        f"""
        CREATE FUNCTION app_cascade() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id = {moved} THEN
                UPDATE course_unit_elements SET course_unit_id = {u3} WHERE id = {sibling};
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER aaa_app_cascade AFTER UPDATE ON course_unit_elements
            FOR EACH ROW EXECUTE FUNCTION app_cascade();
        """
    )
    conn.execute("UPDATE course_unit_elements SET credits = 4 WHERE id = %s", (moved,))
    assert [catalogue.totals(conn, u)[0] for u in (u1, u2, u3)] == [4, 0, 5]
    assert catalogue.drift_count(conn) == 0


def test_with_the_row_trigger_disabled_the_statement_path_still_syncs(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=3)
    conn.execute("ALTER TABLE course_unit_elements DISABLE TRIGGER course_unit_elements_resync_row")
    assert _route(conn, "UPDATE course_unit_elements SET credits = 7 WHERE id = %s", e) == (
        "statement"
    )
    assert catalogue.totals(conn, u)[0] == Decimal(7)


def test_an_unchanged_row_writes_nothing_to_its_unit(conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u)
    before = catalogue.read_unit(conn, u)
    conn.execute("UPDATE course_unit_elements SET name = 'renamed' WHERE id = %s", (e,))
    assert catalogue.read_unit(conn, u) == before


def test_the_row_path_honours_the_flags(conn):
    off = catalogue.unit(conn, auto_sync_enabled=False, credits=9)
    fixed = catalogue.unit(conn, sync_credits_with_elements=False, credits=9)
    e_off, e_fixed = catalogue.element(conn, off), catalogue.element(conn, fixed, cm=20)
    conn.execute("UPDATE course_unit_elements SET credits = 1 WHERE id = %s", (e_off,))
    conn.execute("UPDATE course_unit_elements SET hours_cm = 30 WHERE id = %s", (e_fixed,))
    assert catalogue.totals(conn, off)[0] == Decimal(9)  # not synced at all
    assert catalogue.totals(conn, fixed)[0] == Decimal(9)  # credits kept, hours synced
    assert catalogue.totals(conn, fixed)[1] == Decimal(30)
    conn.execute("SET ue_resync.mode = deferred")
    conn.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e_off,))
    assert catalogue.jobs(conn, off) == []


def test_the_optimistic_sync_falls_back_when_another_writer_updated_the_unit(dsn):
    """Writer A holds the UE row (its inline sync updated it); writer B's one-statement sync
    waits for it, then finds the row at a newer version than its sums were read from: it
    must not write those sums (they miss A's element) but sync again under the lock."""
    with (
        psycopg.connect(dsn, autocommit=True) as setup,
        psycopg.connect(dsn) as a,
        psycopg.connect(dsn) as b,
    ):
        u = catalogue.unit(setup)
        e1 = catalogue.element(setup, u, credits=1)
        e2 = catalogue.element(setup, u, credits=1)
        b_pid = b.info.backend_pid
        b.execute("SET ue_resync.lock_timeout = '30s'")
        b.commit()

        a.execute("UPDATE course_unit_elements SET credits = 10 WHERE id = %s", (e1,))
        failure: list[BaseException] = []

        def write_b() -> None:
            try:
                b.execute("UPDATE course_unit_elements SET credits = 20 WHERE id = %s", (e2,))
                b.commit()
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)

        t = threading.Thread(target=write_b)
        t.start()
        wait_until_blocked(setup, b_pid, "writer B waiting for the UE row")
        a.commit()
        t.join(timeout=30)
        assert not t.is_alive() and failure == []

        assert catalogue.totals(setup, u)[0] == Decimal(30)
        assert _consistent(setup, u)
        assert catalogue.jobs(setup) == []
