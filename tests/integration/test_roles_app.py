"""Least privilege, the application's side: a role with rights on course_units and
course_unit_elements only (none on schema resync) writes elements and the UE still syncs, or
defers, through the SECURITY DEFINER triggers, even under a hostile search_path."""

from __future__ import annotations

import psycopg

from support import catalogue
from tests.roles import APP_GRANTS, denied, scalar


def test_an_application_role_without_queue_rights_syncs_inline(conn, login):
    u = catalogue.unit(conn)
    app = login("app", *APP_GRANTS)
    assert not scalar(
        conn,
        "SELECT has_function_privilege(%s, 'resync.on_element_statement()', 'EXECUTE') "
        "    OR has_schema_privilege(%s, 'resync', 'USAGE')",
        (app.name, app.name),
    )
    with app.connect() as writer:
        e = catalogue.element(writer, u, credits=3, cm=10, td=5, tp=5)
        catalogue.element(writer, u, credits=2, cm=4, td=4, tp=4)
        writer.execute("UPDATE course_unit_elements SET credits = 4 WHERE id = %s", (e,))
        denied(writer, "SELECT * FROM resync.pgqueuer")
        denied(writer, "SELECT resync.request(%s)", (u,))
    assert catalogue.totals(conn, u) == (6, 14, 9, 9, 32, 2)
    assert catalogue.jobs(conn) == []


def test_an_application_role_without_queue_rights_still_defers(conn, login, dsn):
    u = catalogue.unit(conn)
    app = login("app", *APP_GRANTS)
    with app.connect() as writer:
        e = catalogue.element(writer, u, credits=3)
        with psycopg.connect(dsn) as holder:  # not autocommit: holds the UE row
            holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
            writer.execute("UPDATE course_unit_elements SET credits = 5 WHERE id = %s", (e,))
            holder.rollback()
    [job] = catalogue.jobs(conn, u)
    assert job["status"] == "queued"
    assert job["headers"]["reason"] == "sync_error_after_updated"
    assert scalar(conn, "SELECT sqlstate FROM resync.sync_failures") == "55P03"
    assert catalogue.totals(conn, u)[0] == 3  # the deferred job will write 5


# -- a hostile search_path -----------------------------------------------------------------------


EVIL = """
CREATE SCHEMA evil;
CREATE TABLE evil.hijacked (what text);
CREATE TABLE evil.course_units (LIKE public.course_units);
CREATE TABLE evil.course_unit_elements (LIKE public.course_unit_elements);
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('now()') RETURNING pg_catalog.now() $$;
CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('current_setting') RETURNING 'off'::text $$;
CREATE FUNCTION evil.set_config(text, text, boolean) RETURNS text LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('set_config') RETURNING $2 $$;
CREATE FUNCTION evil.round(numeric, integer) RETURNS numeric LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('round') RETURNING 666::numeric $$;
CREATE FUNCTION evil.left(text, integer) RETURNS text LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('left') RETURNING $1 $$;
CREATE FUNCTION evil.spy_sum(numeric, numeric) RETURNS numeric LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('sum') RETURNING 666::numeric $$;
CREATE AGGREGATE evil.sum(numeric) (SFUNC = evil.spy_sum, STYPE = numeric);
CREATE FUNCTION evil.spy_int8eq(bigint, bigint) RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO evil.hijacked VALUES ('=') RETURNING $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.spy_int8eq);
"""


# pg_catalog is searched first unless the path names it: the attacker names it after evil.
HOSTILE_PATH = "SET search_path = evil, pg_catalog, public"


def hijacks(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT what FROM evil.hijacked ORDER BY 1").fetchall()]


def test_a_hostile_search_path_does_not_hijack_the_triggers(conn, login, dsn):
    u = catalogue.unit(conn)
    v = catalogue.unit(conn)
    app = login("app", *APP_GRANTS, "CREATE ON DATABASE " + conn.info.dbname, "resync_requester")
    with app.connect() as writer:
        writer.execute(EVIL)
        writer.execute(HOSTILE_PATH)
        # The trap works: the attacker's own statements do call evil.*.
        writer.execute("SELECT now(), round(1.5, 0), 1::bigint = 1::bigint")
        assert hijacks(writer) == ["=", "now()", "round"]
        writer.execute("TRUNCATE evil.hijacked")

        e = writer.execute(
            "INSERT INTO public.course_unit_elements "
            "(course_unit_id, code, name, credits, hours_cm, hours_td, hours_tp, hours_total) "
            "VALUES (%s, 'E1', 'e1', 3, 10, 5, 5, 20), (%s, 'E2', 'e2', 2, 4, 4, 4, 12) "
            "RETURNING id",
            (u, u),
        ).fetchone()[0]
        writer.execute("UPDATE public.course_unit_elements SET credits = 4 WHERE id = %s", (e,))
        with psycopg.connect(dsn) as holder:  # the deferral path, under the same path
            holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
            writer.execute("UPDATE public.course_unit_elements SET credits = 1 WHERE id = %s", (e,))
            holder.rollback()
        writer.execute("INSERT INTO resync.requests (course_unit_id) VALUES (%s)", (v,))
        writer.execute("SELECT resync.request(%s, 'again', '1 minute')", (v,))
        assert hijacks(writer) == []
    assert catalogue.totals(conn, u) == (6, 14, 9, 9, 32, 2)
    assert catalogue.read_unit(conn, u)["hours_distribution"] == {
        "cm": 43.8,
        "td": 28.1,
        "tp": 28.1,
    }
    assert [j["headers"]["reason"] for j in catalogue.jobs(conn, u)] == ["sync_error_after_updated"]
    [job] = catalogue.jobs(conn, v)
    assert job["events"] == 2
