"""Reading the catalogue and the queue back, for the test tiers, and a UE whose every sync fails
(`install_poison`); building it (`unit`, `element`) and waiting (`wait_for`, `await_for`) come
from the support layer."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

# Re-exported: the tests say catalog.unit(…), catalog.wait_for(…).
from support.catalogue import element as element
from support.catalogue import unit as unit
from support.poll import await_for as await_for
from support.poll import wait_for as wait_for


def read_unit(conn: psycopg.Connection, unit_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM course_units WHERE id = %s", (unit_id,)).fetchone()
    assert row is not None, f"no course unit {unit_id}"
    return row


def totals(conn: psycopg.Connection, unit_id: int) -> tuple[Decimal, ...]:
    """(credits, cm, td, tp, total, elements_count) as stored."""
    row = conn.execute(
        "SELECT credits, hours_cm, hours_td, hours_tp, hours_total, elements_count "
        "FROM course_units WHERE id = %s",
        (unit_id,),
    ).fetchone()
    assert row is not None
    return tuple(Decimal(v) for v in row)


def jobs(conn: psycopg.Connection, unit_id: int | None = None) -> list[dict[str, Any]]:
    """The resync jobs in the queue table, oldest first, optionally for one unit. `due_in` is
    from the reader's now(); `delay` from the now() of the transaction that queued the job
    (`created`): exact, however late the reader comes."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, status::text AS status, execute_after, attempts, headers, "
            "       resync.payload_json(payload) AS payload, execute_after - now() AS due_in, "
            "       execute_after - created AS delay, "
            "       resync_events AS events, resync_last_reason AS last_reason, "
            "       resync_deadline - now() AS deadline_in "
            "FROM resync.pgqueuer "
            "WHERE %(unit)s::bigint IS NULL OR headers ->> 'course_unit_id' = %(unit)s::text "
            "ORDER BY id",
            {"unit": unit_id},
        ).fetchall()


def drift_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM resync.drift").fetchone()
    assert row is not None
    return int(row[0])


def install_poison(conn: psycopg.Connection) -> None:
    """Make every sync of a UE whose code starts with POISON fail (P0001 'poisoned unit …'): a
    trigger on course_units, so the resync's write raises as a real failure would."""
    conn.execute(
        """
        CREATE FUNCTION public.poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.code LIKE 'POISON%' THEN
                RAISE EXCEPTION 'poisoned unit %', NEW.code USING ERRCODE = 'P0001';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER poison BEFORE UPDATE ON public.course_units
            FOR EACH ROW EXECUTE FUNCTION public.poison();
        """
    )
