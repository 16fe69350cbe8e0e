"""Installs and upgrades ue-resync on the application's tables the mapping names: checks first,
then everything pending in one transaction.

Before anything, the application's tables are checked against the mapping (preflight.py): a
difference refuses the whole run, with nothing changed. On a first install (no trigger yet), a
run that would change UEs at their first sync also refuses, unless the operator accepted it
(`--accept-resync`, after `--preview`).

`run` applies what is pending (scripts.py: numbered migrations, definitions rendered with the
mapping) under an advisory lock, recording each file in `resync.schema_migrations` /
`resync.schema_definitions`, the mapping in `resync.mapping`, and what it installed in
`resync.schema_objects`: a numbered migration that renames or drops what the definitions use is
never seen without the definitions that follow it. What the system catalog lost of an install
(installation.py) is applied again the same way. `print_sql` renders the very same statements
for a DBA who applies them with `psql -f`."""

from __future__ import annotations

import dataclasses

import psycopg
from psycopg import ClientCursor

from ue_resync import installation, ledger, preflight, scripts
from ue_resync import mapping as mappings
from ue_resync.mapping import Mapping
from ue_resync.queries import query
from ue_resync.scripts import (
    DEFINITIONS,
    Definition,
    MappingRecord,
    Migration,
    MigrationError,
    Script,
    Step,
    UnitColumn,
)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What `run` did: the scripts it applied, the warnings of the preflight, the changes of the
    mapping against the installed one, the differences of the catalogue it repaired, and the UEs
    it queued for their first resync."""

    scripts: list[Script]
    warnings: list[str]
    mapping_changes: list[str]
    repaired: list[str] = dataclasses.field(default_factory=list)
    queued: int | None = None


def plan(
    conn: psycopg.Connection, mapping: Mapping | None = None, added: list[str] | None = None
) -> list[Script]:
    """What `run` would apply now, in order: the numbered migrations, the UE columns to add
    (`added`, from the preflight), the definitions rendered with `mapping` (default: the
    installed one, else the defaults) when any changed or the catalogue lost some of what they
    made (with the owners given back first and the DBA's firing modes kept), the record of what
    they made, and the mapping's."""
    chosen = mapping or ledger.installed_mapping(conn) or mappings.DEFAULT
    todo: list[Script] = []
    todo += ledger.pending(conn)
    todo += [scripts.unit_column(chosen, column) for column in added or []]
    defs = ledger.pending_definitions(conn, chosen)
    repairs = [d for d in installation.differences(conn, chosen) if d[0] != "firing modes"]
    if repairs and not defs:
        defs = scripts.definitions(chosen)
    if defs:
        owners = installation.owner_repairs(conn, chosen) if repairs else ""
        if owners:
            todo.append(Step("owner_repairs", owners))
        todo.append(scripts.step("save_firing_modes", chosen))
        todo += defs
        todo.append(scripts.step("restore_firing_modes", chosen))
        todo.append(scripts.step("record", chosen))
    if ledger.installed_mapping(conn) != chosen or defs:
        todo.append(MappingRecord(chosen))
    if ledger.scalar(conn, "is_superuser"):
        grants = "".join(f"{s};\n" for _, s in installation.parameter_privileges(conn, chosen))
        if grants:
            todo.append(Step("parameter_grants", grants))
    return todo


def run(
    conn: psycopg.Connection, mapping: Mapping | None = None, accept_resync: bool = False
) -> Outcome:
    """Check, then apply what is pending in one transaction; returns what this call applied (an
    installer that held the lock before us may have applied it all: we wait, then find nothing
    to do). MigrationError, with nothing changed, when the application's tables and the mapping
    disagree, or when a first install would change UEs and `accept_resync` is not given."""
    conn.autocommit = True
    installed = ledger.installed_mapping(conn)
    chosen = mapping or installed or mappings.DEFAULT
    report = _preflight(conn, chosen)
    first = not _triggers_installed(conn, chosen)
    if first:
        _gate(conn, chosen, report, accept_resync)
    added = [column for _, column in report.added]
    changes = chosen.differences(installed or mappings.DEFAULT)
    if not plan(conn, chosen, added):
        return Outcome([], report.warnings + installation.not_repaired(conn, chosen), changes)
    queued = None
    with conn.transaction():
        conn.execute(query("migration_lock"))
        repaired = [p for k, _, p in installation.differences(conn, chosen) if k != "firing modes"]
        todo = plan(conn, chosen, added)
        for script in todo:
            for text, params in scripts.statements(script):
                conn.execute(text, params)
        if any(isinstance(s, Definition) for s in todo):
            conn.execute(query("definitions_forget"), {"names": list(DEFINITIONS)})
        if first and accept_resync:
            row = conn.execute(query("enqueue_drifted")).fetchone()
            queued = int(row[0]) if row else 0
    if not any(isinstance(s, Definition) for s in todo):
        repaired = []
    return Outcome(
        todo, report.warnings + installation.not_repaired(conn, chosen), changes, repaired, queued
    )


def apply(
    conn: psycopg.Connection, mapping: Mapping | None = None, accept_resync: bool = False
) -> list[Script]:
    """`run`, for callers that want only the scripts applied."""
    return run(conn, mapping, accept_resync).scripts


def print_sql(
    conn: psycopg.Connection, mapping: Mapping | None = None, accept_resync: bool = False
) -> str:
    """A psql script applying what is pending: the statements `run` runs, in the same single
    transaction, after the same checks. Empty when nothing is pending."""
    chosen = mapping or ledger.installed_mapping(conn) or mappings.DEFAULT
    report = _preflight(conn, chosen)
    if not _triggers_installed(conn, chosen):
        _gate(conn, chosen, report, accept_resync)
    todo = plan(conn, chosen, [column for _, column in report.added])
    if not todo:
        return ""
    cursor = ClientCursor(conn)
    numbered = sum(isinstance(s, Migration) for s in todo)
    parts = [
        f"-- ue-resync: {numbered} pending migration(s), "
        f"{sum(isinstance(s, Definition) for s in todo)} definitions file(s), "
        "apply with: psql -X -f FILE",
        "\\set ON_ERROR_STOP on",
        "BEGIN;",
        cursor.mogrify(query("migration_lock")).strip() + ";",
    ]
    for script in todo:
        label = {
            Migration: script.name,
            Definition: f"definitions/{script.name}",
            UnitColumn: f"add column {script.name}",
            MappingRecord: "the mapping",
            Step: script.name.replace("_", " "),
        }[type(script)]
        parts.append(f"\n-- {label}")
        for text, params in scripts.statements(script):
            parts.append(cursor.mogrify(text, params).strip() + ";")
    if any(isinstance(s, Definition) for s in todo):
        forget = cursor.mogrify(query("definitions_forget"), {"names": list(DEFINITIONS)})
        parts += ["", forget.strip() + ";"]
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"


def _preflight(conn: psycopg.Connection, mapping: Mapping) -> preflight.Report:
    report = preflight.check(conn, mapping)
    if report.problems:
        raise MigrationError(
            f"the application's tables do not match the mapping ({len(report.problems)} "
            "difference(s)); nothing was changed:\n"
            + "\n".join(f"  - {p}" for p in report.problems)
        )
    return report


def _triggers_installed(conn: psycopg.Connection, mapping: Mapping) -> bool:
    schema, table = mapping.table("elements")
    return bool(ledger.scalar(conn, "triggers_installed", {"schema": schema, "table": table}))


def _gate(
    conn: psycopg.Connection, mapping: Mapping, report: preflight.Report, accept_resync: bool
) -> None:
    """A first install that would change UEs goes ahead only when the operator accepted it."""
    if accept_resync:
        return
    changes = preflight.preview(conn, mapping, report).changes
    if changes:
        raise MigrationError(
            f"{len(changes)} course unit(s) would change at their first sync "
            f"(e.g. {preflight.describe(changes[0], list(mapping[('elements', 'counted')]))}); "
            "nothing was changed: see `ue-resync migrate --preview`, fix the mapping or the "
            "data, or install with `ue-resync migrate --accept-resync`"
        )
