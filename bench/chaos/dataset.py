"""What the chaos run's database starts with: its catalogue (loaded by support.catalogue), UEs
with their ECUE, a few hot UEs everyone edits, a few UEs with their sync flags off, and one
poison UE whose resync always fails; and resync.error_policy's delays scaled to the run's time.

The poison is a BEFORE UPDATE trigger on course_units (schema `chaos`, the run's own) that raises
for that UE's code: an inline sync of it defers, and every job for it fails on each attempt, then
for good. Its elements get one change no trigger saw, so it starts (and stays) drifted."""

from __future__ import annotations

import dataclasses
import random

import psycopg

from support.catalogue import load_catalogue

POISON_CODE = "CHAOS-POISON"


@dataclasses.dataclass
class Catalogue:
    units: list[int]  # every UE, poison included
    hot: list[int]  # a few UEs everyone edits
    poison: int
    auto_off: list[int]  # auto_sync_enabled = false: triggers leave them alone
    elements: int

    @property
    def editable(self) -> list[int]:
        """UEs the writers touch: all but the poison (whose drift is the run's own doing)."""
        return [u for u in self.units if u != self.poison]


def load(
    conn: psycopg.Connection, units: int, elements: int, hot: int, rng: random.Random
) -> Catalogue:
    """Load the catalogue (support.catalogue, no trigger firing, every UE consistent), then the
    poison UE with one element synced and one no trigger saw."""
    ids = list(range(1, units + 1))
    hot_ids = ids[:hot]
    # Hot UEs hold more elements (a common UE shared by many programmes).
    weights = [8.0 if u in hot_ids else 1.0 for u in ids]
    rows = [
        (
            u,
            rng.choice([0, 0.5, 1, 1.5, 2, 3, 4, 6]),
            rng.choice([0, 6, 8, 10.5, 12, 20]),
            rng.choice([0, 4, 8, 10, 12.5]),
            rng.choice([0, 2, 4, 6, 9.5]),
        )
        for u in rng.choices(ids, weights=weights, k=elements)
    ]
    # Some UEs keep their own credits, hours, or stay out of the automatic sync.
    flags = [(g % 17 != 3, g % 19 != 4, g % 41 != 7) for g in ids]
    load_catalogue(conn, units, elements=rows, prefix="CH", flags=flags)
    with conn.transaction():
        poison = conn.execute(
            "INSERT INTO course_units (code, name) VALUES (%s, 'Chaos poison unit') RETURNING id",
            (POISON_CODE,),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, hours_cm, "
            "  hours_total) VALUES (%s, 'EC-POISON-1', 'Poison element', 3, 12, 12)",
            (poison,),
        )
        # The poison's one change no trigger sees: it starts drifted.
        conn.execute("SELECT set_config('ue_resync.mode', 'off', true)")
        conn.execute(
            "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, hours_cm, "
            "  hours_total) VALUES (%s, 'EC-POISON-2', 'Poison element 2', 2, 8, 8)",
            (poison,),
        )
    install_poison(conn)
    auto_off = [
        r[0]
        for r in conn.execute("SELECT id FROM course_units WHERE NOT auto_sync_enabled ORDER BY id")
    ]
    conn.execute("ANALYZE course_units")
    conn.execute("ANALYZE course_unit_elements")
    return Catalogue([*ids, poison], hot_ids, poison, auto_off, elements + 2)


def install_poison(conn: psycopg.Connection) -> None:
    conn.execute(
        f"""
        CREATE SCHEMA IF NOT EXISTS chaos;
        CREATE OR REPLACE FUNCTION chaos.poison() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'chaos: UE % refuses every resync (poison)', OLD.code
                USING ERRCODE = 'raise_exception';
        END $$;
        CREATE OR REPLACE TRIGGER chaos_poison
            BEFORE UPDATE ON public.course_units
            FOR EACH ROW WHEN (OLD.code = '{POISON_CODE}')
            EXECUTE FUNCTION chaos.poison();
        """
    )


def scale_policy(conn: psycopg.Connection, time_scale: float) -> list[tuple[str, str]]:
    """Scale the deferral delays of resync.error_policy as the daemons' backoff is scaled
    (UE_RESYNC_TIME_SCALE): 30 s → 0.3 s, 2 min → 1.2 s at 0.01. An operator's edit, not a
    code change. Returns the policy as it now is."""
    conn.execute("UPDATE resync.error_policy SET delay = delay * %s", (time_scale,))
    return [
        (p, str(d))
        for p, d in conn.execute(
            "SELECT sqlstate_pattern, delay FROM resync.error_policy ORDER BY 1"
        ).fetchall()
    ]
