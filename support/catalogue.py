"""Course units (UE) and their elements (ECUE), as the tests and benchmarks need them: one row at
a time through the triggers (`unit`, `element`), or a whole catalogue at once (`load_catalogue`),
loaded with the element triggers disabled and left consistent, so a resync changes nothing but
the sync timestamps until someone makes a UE drift. Then read back: a UE's row and totals, the
jobs queued for it, how many UEs drift; and a UE whose every sync fails (`install_poison`)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ue_resync import catalogue, migrate

_codes = itertools.count(1)

# Per element of load_catalogue; a UE of 4 such elements gets 6 credits, 96 h of which 48 h CM
# (50 %): no LMD warning, so the daemon logs one line per resync, as on a healthy catalogue.
CREDITS, CM, TD, TP = 1.5, 12, 8, 4

# (course_unit_id, credits, hours_cm, hours_td, hours_tp): hours_total is their sum.
ElementRow = tuple[int, float, float, float, float]


def install(conn: psycopg.Connection) -> None:
    """What a fresh database needs before a test or a benchmark: the application's tables with
    the default names, as the Laravel application's migrations make them, then `migrate`."""
    catalogue.create_tables(conn)
    migrate.apply(conn)


def _insert(conn: psycopg.Connection, table: str, values: dict[str, Any]) -> int:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(map(sql.Placeholder, values)),
    )
    row = conn.execute(query, values).fetchone()
    assert row is not None
    return int(row[0])


def unit(conn: psycopg.Connection, **columns: Any) -> int:
    """Insert a course unit (a fresh code and name unless given); its id."""
    n = next(_codes)
    return _insert(conn, "course_units", {"code": f"UE{n:04d}", "name": f"Unit {n}", **columns})


def element(
    conn: psycopg.Connection,
    unit_id: int | None,
    credits: float = 3,
    cm: float = 10,
    td: float = 10,
    tp: float = 10,
    **columns: Any,
) -> int:
    """Insert an element of `unit_id`, its triggers firing; hours_total is cm + td + tp unless
    given. Its id."""
    n = next(_codes)
    values = {
        "course_unit_id": unit_id,
        "code": f"EC{n:04d}",
        "name": f"Element {n}",
        "credits": credits,
        "hours_cm": cm,
        "hours_td": td,
        "hours_tp": tp,
        "hours_total": columns.pop("hours_total", cm + td + tp),
        **columns,
    }
    return _insert(conn, "course_unit_elements", values)


def load_catalogue(
    conn: psycopg.Connection,
    units: int,
    per_unit: int = 4,
    elements: Sequence[ElementRow] | None = None,
    prefix: str = "UE",
    flags: Sequence[tuple[bool, bool, bool]] | None = None,
) -> list[int]:
    """Load UEs 1…`units` (codes `prefix`1…) into an empty catalogue, and their elements: either
    `per_unit` alike per UE (ids 1…units*per_unit, those of UE u being (u-1)*per_unit+1 …
    u*per_unit, see element_of), or the `elements` rows given. `flags[i]` sets UE i+1's
    (sync_credits_with_elements, sync_hours_with_elements, auto_sync_enabled). Loaded with
    ue_resync.mode = off (the triggers' firing modes left as they are), the UEs end consistent
    (as a sync would leave them, flags honoured). The UE ids."""
    with conn.transaction():
        conn.execute("SET LOCAL ue_resync.mode = 'off'")
        conn.execute(
            "INSERT INTO public.course_units (id, code, name) "
            "SELECT g, %s || g, 'Unit ' || g FROM generate_series(1, %s) g",
            (prefix, units),
        )
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('public.course_units', 'id'), %s)", (units,)
        )
        if flags is not None:
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE public.course_units SET sync_credits_with_elements = %s, "
                    "sync_hours_with_elements = %s, auto_sync_enabled = %s WHERE id = %s",
                    [(*f, i) for i, f in enumerate(flags, 1)],
                )
        if elements is None:
            _alike_elements(conn, units, per_unit)
        else:
            _given_elements(conn, elements)
        make_consistent(conn)
    settle(conn)
    return list(range(1, units + 1))


def _alike_elements(conn: psycopg.Connection, units: int, per_unit: int) -> None:
    conn.execute(
        """
        INSERT INTO public.course_unit_elements
            (id, course_unit_id, code, name, credits, hours_cm, hours_td, hours_tp, hours_total)
        SELECT (u - 1) * %(per)s + k, u, 'EC' || u || '.' || k, 'Element ' || u || '.' || k,
               %(credits)s, %(cm)s, %(td)s, %(tp)s, %(total)s
        FROM generate_series(1, %(units)s) u, generate_series(1, %(per)s) k
        ORDER BY u, k
        """,
        {
            "units": units,
            "per": per_unit,
            "credits": CREDITS,
            "cm": CM,
            "td": TD,
            "tp": TP,
            "total": CM + TD + TP,
        },
    )
    conn.execute(
        "SELECT setval(pg_get_serial_sequence('public.course_unit_elements', 'id'), %s)",
        (units * per_unit,),
    )


def _given_elements(conn: psycopg.Connection, rows: Sequence[ElementRow]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO public.course_unit_elements (course_unit_id, code, name, credits, "
            "  hours_cm, hours_td, hours_tp, hours_total) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (u, f"EC{n:06d}", f"Element {n}", credits, cm, td, tp, cm + td + tp)
                for n, (u, credits, cm, td, tp) in enumerate(rows, 1)
            ],
        )


def make_consistent(conn: psycopg.Connection) -> int:
    """Write into every UE what a sync would, in one statement (no trigger, no job); how many."""
    cur = conn.execute(
        """
        UPDATE public.course_units u
        SET credits = x.credits, hours_cm = x.hours_cm, hours_td = x.hours_td,
            hours_tp = x.hours_tp, hours_total = x.hours_total,
            elements_count = x.elements_count, hours_distribution = x.hours_distribution
        FROM resync.expected x
        WHERE x.id = u.id
        """
    )
    return cur.rowcount


CATALOGUE = ("public.course_units", "public.course_unit_elements")


def settle(conn: psycopg.Connection, *tables: str) -> None:
    """VACUUM (ANALYZE) `tables` (default: the catalogue's) and CHECKPOINT, so what is timed next
    starts from the same state: no dead rows left behind, no full-page writes owed."""
    for table in tables or CATALOGUE:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.SQL(table)))
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")


def element_of(unit: int, per_unit: int = 4, k: int = 0) -> int:
    """The id of the k-th element (0-based) of UE `unit`, as load_catalogue numbers them."""
    return (unit - 1) * per_unit + 1 + k


# The triggers sql/definitions/element_triggers.sql puts on the elements for every session
# (the two replica ones aside): they work together, enabled or disabled as one.
ELEMENT_TRIGGERS = tuple(
    f"course_unit_elements_resync_{kind}"
    for kind in (
        "start",
        "row",
        "statement_insert",
        "statement_update",
        "statement_delete",
        "truncate",
    )
)


def trigger_modes(conn: psycopg.Connection) -> dict[str, str]:
    """Each trigger on the elements and its firing mode (pg_trigger.tgenabled: O, A, R, D)."""
    return dict(
        conn.execute(
            "SELECT tgname::text, tgenabled::text FROM pg_trigger "
            "WHERE tgrelid = 'course_unit_elements'::regclass AND NOT tgisinternal"
        ).fetchall()
    )


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
