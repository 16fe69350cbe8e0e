"""The commands about the install: `migrate` (and its --preview, --verify, --print-sql), `mapping`
and `check`, one function each, as commands.py has the others."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ue_resync import installation, ledger, mapping, migrate, output, preflight, scripts
from ue_resync.commands import EXIT_DRIFT, EXIT_ERROR, EXIT_OK, EXIT_USAGE, CommandError, connect
from ue_resync.queries import query
from ue_resync.settings import Settings


def _mapping(args: argparse.Namespace, settings: Settings) -> mapping.Mapping | None:
    """The mapping file given (--mapping, else UE_RESYNC_MAPPING), read; None when none is."""
    path = getattr(args, "mapping", None) or settings.mapping
    if path is None:
        return None
    try:
        return mapping.load(path)
    except mapping.MappingError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    declared = _mapping(args, settings)
    with connect(settings, "migrate") as conn:
        if args.verify:
            return _verify(conn, declared)
        if args.preview:
            return _preview(conn, declared)
        if args.print_sql:
            sys.stdout.write(migrate.print_sql(conn, declared, args.accept_resync))
            return EXIT_OK
        outcome = migrate.run(conn, declared, args.accept_resync)
        version = ledger.check_current(conn)
        drifted = [] if outcome.queued is not None else _drifted(conn)
    for line in outcome.mapping_changes:
        print(f"mapping: {line}")
    for line in outcome.repaired:
        print(f"repaired: {line}")
    for warning in outcome.warnings:
        print(f"warning: {warning}")
    if outcome.scripts:
        steps = ", ".join(_step(s) for s in outcome.scripts)
        print(f"applied {len(outcome.scripts)} step(s): {steps}")
    print(f"schema at version {version}")
    if outcome.queued is not None:
        print(
            f"queued the first resync of {outcome.queued} course unit(s) (ue-resync work runs it)"
        )
    if drifted:
        print(
            f"{len(drifted)} course unit(s) differ from their elements: ue-resync check lists "
            "them, ue-resync check --enqueue queues their resync"
        )
    return EXIT_OK


def _verify(conn: psycopg.Connection, declared: mapping.Mapping | None) -> int:
    """`migrate --verify`: read-only; one line per difference, EXIT_DRIFT when any."""
    found = installation.verify(conn, declared)
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} difference(s): `ue-resync migrate` repairs what ue-resync installed")
        return EXIT_DRIFT
    print("verified: the database holds what ue-resync installs")
    return EXIT_OK


def _step(script: scripts.Script) -> str:
    if isinstance(script, scripts.Definition):
        return f"definitions/{script.name}"
    if isinstance(script, scripts.UnitColumn):
        return f"add column {script.name}"
    return script.name


def _drifted(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query("drift")).fetchall()


def _preview(conn: psycopg.Connection, declared: mapping.Mapping | None) -> int:
    """`migrate --preview`: read-only; what migrate would change, and what the first sync would
    write. Exit 0 when migrate would go ahead, 1 when it would refuse."""
    chosen = declared or ledger.installed_mapping(conn) or mapping.DEFAULT
    report = preflight.check(conn, chosen)
    print(f"mapping: {'the defaults' if chosen.is_default() else 'as declared'}")
    for line in chosen.differences(ledger.installed_mapping(conn) or mapping.DEFAULT):
        print(f"  {line}")
    if report.problems:
        print(f"migrate would refuse: {len(report.problems)} difference(s) with the mapping")
        for problem in report.problems:
            print(f"  - {problem}")
        return EXIT_ERROR
    for warning in report.warnings:
        print(f"warning: {warning}")
    todo = migrate.plan(conn, chosen, [column for _, column in report.added])
    print("migrate would apply: " + (", ".join(_step(s) for s in todo) if todo else "nothing"))
    changes = preflight.preview(conn, chosen, report)
    if not changes.changes:
        print("the first sync would change no course unit")
        return EXIT_OK
    print(f"the first sync would change {len(changes.changes)} course unit(s):")
    print(
        "  per column: "
        + ", ".join(f"{column} {n}" for column, n in sorted(changes.per_column.items()))
    )
    for change in changes.changes[:PREVIEW_EXAMPLES]:
        print("  " + preflight.describe(change, changes.counted))
    if len(changes.changes) > PREVIEW_EXAMPLES:
        more = len(changes.changes) - PREVIEW_EXAMPLES
        print(f"  … and {more} more (ue-resync check lists them all once installed)")
    return EXIT_OK


PREVIEW_EXAMPLES = 10


def cmd_mapping(args: argparse.Namespace, settings: Settings) -> int:
    """Print the mapping as TOML: the file's when one is given, else the installed one, else the
    defaults (which a database is then read with)."""
    declared = _mapping(args, settings)
    if declared is None and settings.has_database():
        with connect(settings, "mapping") as conn:
            declared = ledger.installed_mapping(conn)
    sys.stdout.write((declared or mapping.DEFAULT).to_toml())
    return EXIT_OK


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when no UE drifted, or when --enqueue queued the resync of every drifted UE;
    EXIT_DRIFT when drift is left."""
    with connect(settings, "check") as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = _drifted(conn)
        queued = None
        if args.enqueue and rows:
            found = cur.execute(query("enqueue_drifted")).fetchone()
            queued = found["queued"] if found else 0
    status = EXIT_DRIFT if rows and queued is None else EXIT_OK
    if args.json:
        output.emit_json({"drifted": rows, "queued": queued})
        return status
    if not rows:
        print("no drift: every course unit matches its elements")
        return status
    for row in rows:
        name = f"UE {row['course_unit_id']}" + (f" ({row['code']})" if row["code"] else "")
        moved = ", ".join(
            f"{column} {output.number(stored)} → {output.number(expected)}"
            for column, (stored, expected) in row["differences"].items()
        )
        print(f"{name}: {moved}")
    print(
        f"{len(rows)} course unit(s) drifted (stored → expected)"
        + (
            f"; {queued} resync(s) queued"
            if queued is not None
            else "; ue-resync check --enqueue queues their resync"
        )
    )
    return status
