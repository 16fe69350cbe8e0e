"""One bulk statement: `UPDATE course_unit_elements SET hours_td = hours_td + 1` over 40,000
elements of 10,000 UEs, in its own transaction, timed from BEGIN to the end of COMMIT, in three
variants alternated round by round: triggers disabled (baseline), inline (one statement trigger
resyncs the 10,000 UEs) and deferred (it queues 10,000 coalesced jobs; no daemon runs).

Before every run the queue is emptied, the tables vacuumed and a checkpoint taken."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bench import common
from bench.common import Bench, Target, timer
from support.catalogue import load_catalogue

NAME = "bulk_update"
TITLE = "one UPDATE of every element (4 per UE), one transaction"
TABLES = ("public.course_unit_elements", "public.course_units", "resync.pgqueuer")


def measure(b: Bench) -> None:
    units = 1_000 if b.quick else 10_000
    b.params.update(units=units, elements=units * 4)
    with b.connect() as conn:
        load_catalogue(conn, units)

    def variant(triggers: bool, mode: str) -> float:
        with b.connect() as conn:
            common.set_triggers(conn, triggers)
            conn.execute("TRUNCATE resync.pgqueuer")
            common.settle(conn, *TABLES)
            try:
                with timer() as elapsed, conn.transaction():
                    conn.execute("SELECT set_config('ue_resync.mode', %s, true)", (mode,))
                    cur = conn.execute("UPDATE course_unit_elements SET hours_td = hours_td + 1")
                    assert cur.rowcount == units * 4
                seconds = elapsed()
                if mode == "deferred" and triggers:
                    queued = conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone()[0]
                    assert queued == units, f"{queued} jobs queued for {units} UEs"
            finally:
                common.set_triggers(conn, True)
        return seconds * 1000

    runs = b.alternate(
        {
            "baseline": lambda _: variant(False, "inline"),
            "inline": lambda _: variant(True, "inline"),
            "deferred": lambda _: variant(True, "deferred"),
        }
    )
    base = runs["baseline"]
    b.paired("inline statement", "ms", runs["inline"], base, "triggers disabled", Target("<=", 2.0))
    b.paired(
        "deferred statement", "ms", runs["deferred"], base, "triggers disabled", Target("<=", 1.5)
    )
    b.paired("baseline statement (triggers disabled)", "ms", base)


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(NAME, TITLE, measure, argv, __doc__, full_rounds=7, quick_rounds=2)


if __name__ == "__main__":
    sys.exit(main())
