"""The floors of the single-row path, for the benchmarks' `--floors`: bench/floor_triggers.sql (the
least a PL/pgSQL row trigger can do for each mode) and bench/floor_routed.sql (that floor behind
the real routing), swapped in for one variant of a benchmark, the real definitions put back
after. Used by writer_tps and laravel_writes (bench/README.md, "The floors of the writers'
benchmark")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bench.common import ROOT, Bench

FLOORS = ROOT / "bench" / "floor_triggers.sql"
ROUTED = ROOT / "bench" / "floor_routed.sql"

# What a floor replaces, as statements that re-create it, in a fixed order.
REAL_DEFINITIONS = """
SELECT pg_get_functiondef('resync.on_element_row()'::regprocedure)
UNION ALL
SELECT regexp_replace(pg_get_triggerdef(t.oid), '^CREATE TRIGGER', 'CREATE OR REPLACE TRIGGER')
FROM pg_trigger t
WHERE t.tgrelid = 'public.course_unit_elements'::regclass
  AND t.tgname IN ('course_unit_elements_resync_start', 'course_unit_elements_resync_row',
                   'course_unit_elements_resync_statement_update')
ORDER BY 1
"""


def work(path: Path) -> str:
    """The part of a floor's row function that does the work (from its mode test to the end of
    that IF): floor_routed.sql must do exactly what floor_triggers.sql does."""
    text = path.read_text()
    start = text.index("    IF current_setting('ue_resync.mode', true) = 'deferred' THEN")
    return text[start : text.index("    END IF;", start)]


def check_routed() -> None:
    assert work(ROUTED) == work(FLOORS), f"{ROUTED.name} differs from {FLOORS.name}"


@contextlib.contextmanager
def swapped(b: Bench, floor: Path | None) -> Iterator[None]:
    """With `floor` (FLOORS or ROUTED) in place of the real row trigger and function; the real
    ones put back after, and checked. With None, the real ones."""
    if floor is None:
        yield
        return
    with b.connect() as conn:
        real = [str(r[0]) for r in conn.execute(REAL_DEFINITIONS).fetchall()]
        conn.execute(floor.read_text().encode())
    try:
        yield
    finally:
        with b.connect() as conn:
            for statement in real:
                conn.execute(statement.encode())
            put_back = [str(r[0]) for r in conn.execute(REAL_DEFINITIONS).fetchall()]
        assert put_back == real, "the real trigger definitions were not put back"
