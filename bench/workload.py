"""The data the benchmarks work on: a catalogue of UEs with their ECUE, loaded fast (one
INSERT … SELECT generate_series per table, our triggers disabled) and left consistent, so a
resync changes nothing but the sync timestamps unless a benchmark makes it drift."""

from __future__ import annotations

import psycopg

from bench.common import set_triggers, settle

# Per element; a UE of 4 elements gets 6 credits, 96 h of which 48 h CM (50 %): no LMD
# warning, so the daemon logs one line per resync, as on a healthy catalogue.
CREDITS, CM, TD, TP = 1.5, 12, 8, 4


def load_catalogue(conn: psycopg.Connection, units: int, per_unit: int = 4) -> None:
    """`units` UEs (ids 1…units) with `per_unit` elements each (element ids 1…units*per_unit,
    those of UE u being (u-1)*per_unit+1 … u*per_unit), the UE totals consistent."""
    set_triggers(conn, False)
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO public.course_units (id, code, name) "
                "SELECT g, 'UE' || g, 'Unit ' || g FROM generate_series(1, %s) g",
                (units,),
            )
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('public.course_units', 'id'), %s)", (units,)
            )
            conn.execute(
                """
                INSERT INTO public.course_unit_elements
                    (id, course_unit_id, code, name, credits, hours_cm, hours_td, hours_tp,
                     hours_total)
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
            make_consistent(conn)
    finally:
        set_triggers(conn, True)
    settle(conn, "public.course_units", "public.course_unit_elements")


def make_consistent(conn: psycopg.Connection) -> int:
    """Write into every UE what a sync would, in one statement (no trigger, no job)."""
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


def element_of(unit: int, per_unit: int = 4, k: int = 0) -> int:
    """The id of the k-th element (0-based) of UE `unit`, as load_catalogue numbers them."""
    return (unit - 1) * per_unit + 1 + k
