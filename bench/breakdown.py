"""What each guarantee of the element triggers costs a single-row inline write, at one client:
the real triggers, and copies of them each without one guarantee, in the same rounds as the
application alone (triggers disabled) and the floor (bench/floor_triggers.sql: the least a row
trigger can do that recomputes the UE).

One pgbench client (`--protocol=prepared`), one `UPDATE course_unit_elements SET hours_td =
hours_td + 1 WHERE id = :id` per transaction, as an Eloquent save writes. Each variant is the
rendered sql/definitions/element_triggers.sql with one change (VARIANTS: the text it replaces,
checked to be there, so a copy never silently drifts from the real triggers), applied for its run
and the real definitions put back after (checked against what migrate recorded). The figure of a
variant is its added latency per write against the application alone, in µs; what the real
triggers cost more than the variant is the price of the guarantee it drops."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from bench import common
from bench.common import Bench
from bench.floors import FLOORS, swapped
from bench.writer_tps import run_pgbench
from support.catalogue import load_catalogue
from ue_resync import installation, mapping, scripts

NAME = "breakdown"
TITLE = "the price of each guarantee of a single-row inline write, 1 client (pgbench)"
TABLES = ("public.course_unit_elements", "public.course_units", "resync.pgqueuer")
STATEMENT_TRIGGERS = (
    "course_unit_elements_resync_statement_insert",
    "course_unit_elements_resync_statement_update",
    "course_unit_elements_resync_statement_delete",
)


def element_triggers(declared: mapping.Mapping = mapping.DEFAULT) -> str:
    """sql/definitions/element_triggers.sql as migrate renders it."""
    return next(d.text for d in scripts.definitions(declared) if d.name == "element_triggers")


def replaced(text: str, old: str, new: str) -> str:
    """`text` with `old` (which must be there, once per row function at least) replaced."""
    if old not in text:
        raise AssertionError(f"breakdown: the triggers no longer hold {old[:60]!r}")
    return text.replace(old, new)


def without_row_function_frame(text: str) -> str:
    start = text.index("CREATE OR REPLACE FUNCTION resync.on_element_row()")
    head, body = text[:start], text[start:]
    body = replaced(body, "SECURITY DEFINER\nSET search_path = pg_catalog, pg_temp\nAS $$", "AS $$")
    return head + body


def without_lock_timeout(text: str) -> str:
    text = replaced(
        text,
        "        v_saved := current_setting('lock_timeout');\n"
        "        PERFORM set_config('lock_timeout',\n"
        "            coalesce(nullif(current_setting('ue_resync.lock_timeout', true), ''), "
        "'100ms'), true);\n",
        "",
    )
    return replaced(text, "        PERFORM set_config('lock_timeout', v_saved, true);\n", "")


def without_subtransaction(text: str) -> str:
    start = text.index("CREATE OR REPLACE FUNCTION resync.on_element_row()")
    head, body = text[:start], text[start:]
    body = replaced(
        body,
        "        BEGIN\n            -- seen is the UE row",
        "            -- seen is the UE row",
    )
    handler = body.index("        EXCEPTION\n", body.index("IF NOT FOUND THEN"))
    end = body.index("        END;\n", handler) + len("        END;\n")
    return head + body[:handler] + body[end:]


def without_optimistic_check(text: str) -> str:
    text = replaced(text, "\n              AND w.xmin = x.seen;", ";")
    return replaced(
        text,
        "            IF NOT FOUND THEN\n"
        "                PERFORM resync.sync_units(array[v_unit], false, true);\n"
        "            END IF;\n",
        "",
    )


def without_mode_setting(text: str) -> str:
    return replaced(
        text,
        "IF coalesce(current_setting('ue_resync.mode', true), '') IN ('', 'inline') THEN",
        "IF true THEN",
    )


def without_routing(text: str) -> str:
    """A row trigger alone: the row function called for every row (no WHEN), no start trigger
    and no statement triggers (a bulk statement would sync each UE once per row)."""
    text = without_statement_triggers(text)
    start = text.index("CREATE OR REPLACE TRIGGER course_unit_elements_resync_row")
    when = text.index("    WHEN (", start)
    end = text.index("    EXECUTE FUNCTION resync.on_element_row();", start)
    return (
        text[:when]
        + text[end:]
        + ("DROP TRIGGER course_unit_elements_resync_start ON public.course_unit_elements;\n")
    )


def without_statement_triggers(text: str) -> str:
    return text + "".join(
        f"DROP TRIGGER {name} ON public.course_unit_elements;\n" for name in STATEMENT_TRIGGERS
    )


def rendered_without(*keys: str) -> Callable[[str], str]:
    """The triggers rendered with a mapping whose optional `keys` are absent."""
    declared = mapping.DEFAULT.without(("units", key) for key in keys)
    return lambda _: element_triggers(declared)


def without_second_look(text: str) -> str:
    start = text.index("    IF v_check THEN\n")
    end = text.index("\n    END IF;\n", start) + len("\n    END IF;\n")
    return text[:start] + text[end:]


def without_debounce(text: str) -> str:
    text = replaced(
        text,
        "    v_debounce := coalesce(nullif(current_setting('ue_resync.debounce', true), ''),\n"
        "                           '2s')::interval;\n",
        "    v_debounce := interval '0';\n",
    )
    return without_second_look(text)


def without_seqscan_setting(text: str) -> str:
    text = replaced(
        text,
        "    v_saved := current_setting('enable_seqscan');\n"
        "    PERFORM set_config('enable_seqscan', 'off', true);\n",
        "",
    )
    return replaced(text, "    PERFORM set_config('enable_seqscan', v_saved, true);\n", "")


# The deferred path's own guarantees (bench.instructions counts them in deferred mode).
DEFERRED_VARIANTS: dict[str, tuple[str, Callable[[str], str]]] = {
    "deferred: no second look": (
        "a new job due now trails a resync the daemon is running (a pick that commits while "
        "the insert runs)",
        without_second_look,
    ),
    "deferred: no debounce": (
        "events on a UE the daemon is busy with trail it (ue_resync.debounce), the second "
        "look included",
        without_debounce,
    ),
    "deferred: no enable_seqscan setting": (
        "the queue's statements planned without a sequential scan, whatever its statistics",
        without_seqscan_setting,
    ),
}


# name: (the guarantee the variant drops, how it is made)
VARIANTS: dict[str, tuple[str, Callable[[str], str]]] = {
    "no statement triggers": (
        "bulk statements synced once per statement: their transition tables captured and their "
        "WHEN clause evaluated, on a single-row statement too",
        without_statement_triggers,
    ),
    "no routing": (
        "bulk statements synced once per statement: all of it, the row trigger's WHEN clause "
        "counting rows included",
        without_routing,
    ),
    "no SECURITY DEFINER frame": (
        "the writer needs no right on the queue; a hostile search_path is harmless",
        without_row_function_frame,
    ),
    "no mode setting": ("ue_resync.mode read (inline, deferred or off)", without_mode_setting),
    "no lock_timeout": ("a writer waits at most ue_resync.lock_timeout", without_lock_timeout),
    "no subtransaction": (
        "a failed sync never fails the writer's statement",
        without_subtransaction,
    ),
    "no optimistic check": (
        "a sync racing another writer's is redone under the lock",
        without_optimistic_check,
    ),
    "no hours_distribution": (
        "hours_distribution written",
        rendered_without("hours_distribution"),
    ),
    "no flags": (
        "the UE's flags (auto sync, credits, hours) honoured",
        rendered_without(
            "sync_credits_with_elements", "sync_hours_with_elements", "auto_sync_enabled"
        ),
    ),
}


def measure(b: Bench) -> None:
    units = 2_000 if b.quick else 10_000
    seconds = 2 if b.quick else 12
    warmup = 1 if b.quick else 3
    b.params.update(
        units=units,
        elements=units * 4,
        clients=1,
        seconds_per_run=seconds,
        warmup_seconds=warmup,
        tool="pgbench --protocol=prepared --client=1",
    )
    with b.connect() as conn:
        load_catalogue(conn, units)
    script = b.workdir / "update_one.sql"
    script.write_text(
        f"\\set id random(1, {units * 4})\n"
        "UPDATE course_unit_elements SET hours_td = hours_td + 1 WHERE id = :id;\n"
    )
    real = element_triggers()
    for name, (_, make) in VARIANTS.items():  # each copy must still apply to the triggers
        assert make(real) != real, name

    def run(triggers: bool, definitions: str | None = None) -> float:
        with b.connect() as conn:
            common.set_triggers(conn, triggers)
            if definitions is not None:
                conn.execute(definitions.encode())
            conn.execute("TRUNCATE resync.pgqueuer")
            common.settle(conn, *TABLES)
        try:
            run_pgbench(b, script, warmup, clients=1)
            _, latency = run_pgbench(b, script, seconds, clients=1)
        finally:
            with b.connect() as conn:
                if definitions is not None:
                    conn.execute(real.encode())
                    assert installation.differences(conn, mapping.DEFAULT) == [], "not put back"
                common.set_triggers(conn, True)
        return latency * 1000  # µs

    def floor(_: int) -> float:
        with swapped(b, FLOORS):
            return run(True)

    variants: dict[str, Callable[[int], float]] = {
        "triggers disabled": lambda _: run(False),
        "floor": floor,
        "ue-resync": lambda _: run(True),
    }
    copies = {name: make(real) for name, (_, make) in VARIANTS.items()}
    for name, text in copies.items():
        variants[name] = lambda _, text=text: run(True, text)
    runs = b.alternate(variants)
    added = {
        name: [v - a for v, a in zip(values, runs["triggers disabled"], strict=True)]
        for name, values in runs.items()
        if name != "triggers disabled"
    }
    b.paired("application alone", "µs/write", runs["triggers disabled"])
    b.paired("floor, added", "µs/write", added["floor"])
    b.paired(
        "ue-resync, added", "µs/write", added["ue-resync"], added["floor"], "the floor's added"
    )
    for name, (guarantee, _) in VARIANTS.items():
        price = [r - v for r, v in zip(added["ue-resync"], added[name], strict=True)]
        b.paired(f"price of: {name}", "µs/write", price, note=guarantee)
    b.extra["latency_us"] = runs


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(NAME, TITLE, measure, argv, __doc__, 5, 1)


if __name__ == "__main__":
    sys.exit(main())
