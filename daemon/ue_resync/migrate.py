"""Installs and upgrades the schema from `sql/`, on the application's tables the mapping names.

- `sql/migrations/NNNN_name.sql`: numbered, forward only, each applied once (tables, columns,
  indexes, data moves, pgqueuer's DDL) in schema resync. The first is the baseline: it is
  applied to an empty ledger only; a database whose ledger already reaches its version was
  migrated by the files the baseline replaced, and keeps their rows as history.
- `sql/definitions/<concern>.sql`: functions, triggers, views and grants, one current definition
  each, re-runnable, rendered with the mapping (render.py). When the checksum of any rendered
  file differs from the one recorded, all of them are applied again, in the order of
  `DEFINITIONS`: later files use earlier ones, and the grants come last so that they cover every
  object. A mapping change is therefore a definitions change.

Before anything, the application's tables are checked against the mapping (preflight.py): a
difference refuses the whole run, with nothing changed. On a first install (no trigger yet), a
run that would change UEs at their first sync also refuses, unless the operator accepted it
(`--accept-resync`, after `--preview`).

`run` applies everything pending in one transaction, under an advisory lock, recording each file
in `resync.schema_migrations` / `resync.schema_definitions` and the mapping in `resync.mapping`:
a numbered migration that renames or drops what the definitions use is never seen without the
definitions that follow it. `print_sql` renders the very same statements for a DBA who applies
them with `psql -f`.

The schema version is `N+D`: N the newest numbered migration, D the first 8 hex digits of a
sha256 over the rendered definitions' names and checksums. The daemon runs only on its own
version."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import psycopg
from psycopg import ClientCursor, sql

from ue_resync import mapping as mappings
from ue_resync import preflight, render
from ue_resync.mapping import Mapping
from ue_resync.queries import query

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# The definitions files, in the order they are applied.
DEFINITIONS = (
    "sync",
    "queueing",
    "element_triggers",
    "requests",
    "consistency",
    "worker_runs",
    "operator_functions",
    "catalogue",
    "monitoring_views",
    "roles_and_grants",
)

# Earlier texts of a numbered migration, still accepted in a ledger: {version: {sha256}}.
# 0014_baseline.sql once also created the application's tables, or added the columns it lacked;
# a database migrated with it has them, and is in every other way the one the current text
# makes.
EARLIER_CHECKSUMS = {
    14: {"bbfb106b651ce05f937fa026dd043994d98c159153bbd3f3f3ac96899d2b5db4"},
}


class MigrationError(RuntimeError):
    """The schema on disk and in the database disagree, or the application's tables and the
    mapping do; the message says how, and nothing was changed."""


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Definition:
    """A definitions file, rendered with a mapping."""

    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class UnitColumn:
    """A sync timestamp the UEs lack, added to the application's table (mapping.ADDED_COLUMNS)."""

    name: str  # table.column, for people
    text: str


@dataclasses.dataclass(frozen=True)
class MappingRecord:
    """The mapping, recorded in resync.mapping."""

    mapping: Mapping
    name: str = "mapping"


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """A step around the definitions, rendered from sql/verify.sql: the owners given back before
    them (`owner_repairs`, its statements in `text`), the DBA's firing modes saved and restored
    around them, what was installed recorded after them (`record`)."""

    name: str  # owner_repairs | save_firing_modes | restore_firing_modes | record
    text: str


Script = Migration | Definition | UnitColumn | MappingRecord | Catalogue


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


def sql_dir() -> Path:
    return render.sql_dir()


def available(directory: Path | None = None) -> list[Migration]:
    """The numbered migrations, baseline first."""
    found = []
    for path in sorted((directory or sql_dir() / "migrations").glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), path.stem, path.read_text("utf-8")))
    versions = [m.version for m in found]
    if not found or versions != list(range(versions[0], versions[0] + len(found))):
        raise MigrationError(f"migration versions must follow each other without gaps: {versions}")
    return found


def definitions(
    mapping: Mapping = mappings.DEFAULT, directory: Path | None = None
) -> list[Definition]:
    """The definitions files rendered with `mapping`, in the order they are applied."""
    where = directory or sql_dir() / "definitions"
    names = sorted(p.stem for p in where.glob("*.sql"))
    if names != sorted(DEFINITIONS):
        raise MigrationError(
            f"{where}: the definitions files must be exactly {', '.join(DEFINITIONS)} "
            f"(found {', '.join(names) or 'none'})"
        )
    return [
        Definition(n, render.render((where / f"{n}.sql").read_text("utf-8"), mapping))
        for n in DEFINITIONS
    ]


def code_version() -> int:
    """The newest numbered migration this code ships."""
    return available()[-1].version


def code_schema_version(mapping: Mapping = mappings.DEFAULT) -> str:
    """The schema version this code makes with `mapping`, `N+D`."""
    return _version(code_version(), {d.name: d.checksum for d in definitions(mapping)})


def applied(conn: psycopg.Connection) -> dict[int, tuple[str, str]]:
    """{version: (name, checksum)} of the numbered migrations recorded in the database."""
    if not _scalar(conn, "ledger_exists", {"table": "schema_migrations"}):
        return {}
    rows = conn.execute(query("migrations_applied")).fetchall()
    return {version: (name, checksum) for version, name, checksum in rows}


def applied_definitions(conn: psycopg.Connection) -> dict[str, str]:
    """{name: checksum} of the definitions files recorded in the database."""
    if not _scalar(conn, "ledger_exists", {"table": "schema_definitions"}):
        return {}
    return dict(conn.execute(query("definitions_applied")).fetchall())


def installed_mapping(conn: psycopg.Connection) -> Mapping | None:
    """The mapping recorded in resync.mapping; None when there is none (nothing installed, or a
    database installed before the mapping existed, whose names are the defaults)."""
    if not _scalar(conn, "ledger_exists", {"table": "mapping"}):
        return None
    rows = conn.execute(query("mapping_installed")).fetchall()
    return mappings.from_rows(rows) if rows else None


def pending(conn: psycopg.Connection) -> list[Migration]:
    """The numbered migrations to apply; MigrationError when the ledger rules them out."""
    done = applied(conn)
    shipped = available()
    base = shipped[0]
    top = max(done, default=0)
    if top > code_version():
        raise MigrationError(
            f"the database has schema version {top}, newer than this ue-resync "
            f"({code_version()}): upgrade ue-resync"
        )
    if done and top < base.version:
        raise MigrationError(
            f"the database has schema version {top}, older than this ue-resync's baseline "
            f"({base.version}): migrate it to {base.version} with an earlier ue-resync first"
        )
    for migration in shipped:
        recorded = done.get(migration.version)
        # A baseline row under another name is the history of a database migrated before it.
        if (
            recorded
            and recorded[0] == migration.name
            and recorded[1] != migration.checksum
            and recorded[1] not in EARLIER_CHECKSUMS.get(migration.version, ())
        ):
            raise MigrationError(
                f"{migration.name} was applied with another content (checksum "
                f"{recorded[1][:12]}…); migrations are never edited once applied"
            )
    if not done:
        return shipped
    return [m for m in shipped[1:] if m.version not in done]


def pending_definitions(conn: psycopg.Connection, mapping: Mapping) -> list[Definition]:
    """All the definitions when any differs from what the database recorded, else none."""
    shipped = definitions(mapping)
    if applied_definitions(conn) == {d.name: d.checksum for d in shipped}:
        return []
    return shipped


def differences(conn: psycopg.Connection, mapping: Mapping) -> list[tuple[str, str, str]]:
    """(kind, name, problem) for each object migrate recorded that the catalogue no longer holds
    as it was (sql/verify.sql); none before anything was recorded."""
    if not _scalar(conn, "ledger_exists", {"table": "schema_objects"}):
        return []
    rows = _catalogue_rows(conn, "differences", mapping)
    found = [(str(k), str(n), str(p)) for k, n, p in rows]
    if applied_definitions(conn) and not _scalar(conn, "objects_recorded"):
        found.append(("record", "resync.schema_objects", "nothing recorded of what was installed"))
    return found


def plan(
    conn: psycopg.Connection, mapping: Mapping | None = None, added: list[str] | None = None
) -> list[Script]:
    """What `run` would apply now, in order: the numbered migrations, the UE columns to add
    (`added`, from the preflight), the definitions rendered with `mapping` (default: the
    installed one, else the defaults) when any changed or the catalogue lost some of what they
    made (with the owners given back first and the DBA's firing modes kept), the record of what
    they made, and the mapping's."""
    chosen = mapping or installed_mapping(conn) or mappings.DEFAULT
    todo: list[Script] = []
    todo += pending(conn)
    todo += [_unit_column(chosen, column) for column in added or []]
    defs = pending_definitions(conn, chosen)
    repairs = [d for d in differences(conn, chosen) if d[0] != "firing modes"]
    if repairs and not defs:
        defs = definitions(chosen)
    if defs:
        owners = _owner_repairs(conn, chosen) if repairs else ""
        if owners:
            todo.append(Catalogue("owner_repairs", owners))
        todo.append(_catalogue_step("save_firing_modes", chosen))
        todo += defs
        todo.append(_catalogue_step("restore_firing_modes", chosen))
        todo.append(_catalogue_step("record", chosen))
    if installed_mapping(conn) != chosen or defs:
        todo.append(MappingRecord(chosen))
    if _scalar(conn, "is_superuser"):
        grants = "".join(f"{s};\n" for _, s in _parameter_privileges(conn, chosen))
        if grants:
            todo.append(Catalogue("parameter_grants", grants))
    return todo


def verify(conn: psycopg.Connection, mapping: Mapping | None = None) -> list[str]:
    """Read-only: one line per difference between what this ue-resync installs and the
    database: the ledger behind the code, the application's tables against the mapping, the
    catalogue against what migrate recorded. Empty when all is as installed."""
    if not _scalar(conn, "ledger_exists", {"table": "schema_migrations"}):
        return ["ue-resync is not installed in this database (no schema resync): run migrate"]
    chosen = mapping or installed_mapping(conn) or mappings.DEFAULT
    lines = []
    behind = pending(conn)
    if behind:
        lines.append(
            f"{len(behind)} migration(s) not applied ({', '.join(m.name for m in behind)})"
        )
    elif pending_definitions(conn, chosen):
        lines.append("the definitions are not this ue-resync's (another version or mapping)")
    lines += preflight.check(conn, chosen).problems
    lines += [problem for _, _, problem in differences(conn, chosen)]
    return lines


def run(
    conn: psycopg.Connection, mapping: Mapping | None = None, accept_resync: bool = False
) -> Outcome:
    """Check, then apply what is pending in one transaction; returns what this call applied (an
    installer that held the lock before us may have applied it all: we wait, then find nothing
    to do). MigrationError, with nothing changed, when the application's tables and the mapping
    disagree, or when a first install would change UEs and `accept_resync` is not given."""
    conn.autocommit = True
    installed = installed_mapping(conn)
    chosen = mapping or installed or mappings.DEFAULT
    report = _preflight(conn, chosen)
    first = not _triggers_installed(conn, chosen)
    if first:
        _gate(conn, chosen, report, accept_resync)
    added = [column for _, column in report.added]
    changes = chosen.differences(installed or mappings.DEFAULT)
    if not plan(conn, chosen, added):
        return Outcome([], report.warnings + _not_repaired(conn, chosen), changes)
    queued = None
    with conn.transaction():
        conn.execute(query("migration_lock"))
        repaired = [p for k, _, p in differences(conn, chosen) if k != "firing modes"]
        todo = plan(conn, chosen, added)
        for script in todo:
            for text, params in _statements(script):
                conn.execute(text, params)
        if any(isinstance(s, Definition) for s in todo):
            conn.execute(query("definitions_forget"), {"names": list(DEFINITIONS)})
        if first and accept_resync:
            row = conn.execute(query("enqueue_drifted")).fetchone()
            queued = int(row[0]) if row else 0
    if not any(isinstance(s, Definition) for s in todo):
        repaired = []
    return Outcome(todo, report.warnings + _not_repaired(conn, chosen), changes, repaired, queued)


def _not_repaired(conn: psycopg.Connection, mapping: Mapping) -> list[str]:
    """What is left once migrate re-applied what it installs: the DBA's (mixed firing modes),
    and the SET privileges on the ue_resync.* settings only a superuser may grant."""
    left = [f"not repaired: {problem}" for _, _, problem in differences(conn, mapping)]
    left += [
        f"{role} may not ALTER DATABASE/ROLE … SET ue_resync.* (the rollback of "
        f"docs/cutover.md): as a superuser, run {statement}"
        for role, statement in _parameter_privileges(conn, mapping)
    ]
    return left


def _parameter_privileges(conn: psycopg.Connection, mapping: Mapping) -> list[tuple[str, str]]:
    """(role, GRANT statement) for each owner who may not yet ALTER … SET ue_resync.*."""
    rows = conn.execute(render.query("verify.sql", "parameter_privileges", mapping)).fetchall()
    return [(str(role), str(statement)) for role, statement in rows]


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
    chosen = mapping or installed_mapping(conn) or mappings.DEFAULT
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
            Catalogue: script.name.replace("_", " "),
        }[type(script)]
        parts.append(f"\n-- {label}")
        for text, params in _statements(script):
            parts.append(cursor.mogrify(text, params).strip() + ";")
    if any(isinstance(s, Definition) for s in todo):
        forget = cursor.mogrify(query("definitions_forget"), {"names": list(DEFINITIONS)})
        parts += ["", forget.strip() + ";"]
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"


def check_current(conn: psycopg.Connection) -> str:
    """The database's schema version, or MigrationError when it is not this code's."""
    version = max(applied(conn), default=0)
    recorded = applied_definitions(conn)
    here = _version(version, recorded) if recorded else str(version)
    needed = code_schema_version(installed_mapping(conn) or mappings.DEFAULT)
    if version > code_version():
        raise MigrationError(
            f"database schema is at version {here}, newer than this ue-resync "
            f"({needed}): upgrade ue-resync"
        )
    if here != needed:
        raise MigrationError(
            f"database schema is at version {here}, this ue-resync needs "
            f"{needed}: run `ue-resync migrate`"
        )
    return here


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
    return bool(_scalar(conn, "triggers_installed", {"schema": schema, "table": table}))


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


def _catalogue_step(name: str, mapping: Mapping) -> Catalogue:
    return Catalogue(name, render.query("verify.sql", name, mapping))


def _owner_repairs(conn: psycopg.Connection, mapping: Mapping) -> str:
    rows = _catalogue_rows(conn, "owner_repairs", mapping)
    return "".join(f"{statement};\n" for (statement,) in rows)


def _catalogue_rows(
    conn: psycopg.Connection, name: str, mapping: Mapping
) -> list[tuple[object, ...]]:
    """A query of sql/verify.sql, read under the search_path its record was made with (names and
    definitions are printed qualified by what the search_path hides)."""
    saved = _scalar(conn, "search_path_pin")
    try:
        return conn.execute(render.query("verify.sql", name, mapping)).fetchall()
    finally:
        conn.execute(query("search_path_restore"), {"search_path": saved})


def _unit_column(mapping: Mapping, column: str) -> UnitColumn:
    schema, table = mapping.table("units")
    text = query("add_unit_column").format(
        table=sql.Identifier(schema, table), column=sql.Identifier(column)
    )
    return UnitColumn(f"{schema}.{table}.{column}", text.as_string(None))


def _statements(script: Script) -> list[tuple[sql.SQL, dict[str, object] | None]]:
    """The statements that apply `script` and record it in the ledger."""
    if isinstance(script, Migration):
        return [
            (sql.SQL(script.text), None),
            (
                query("migration_record"),
                {"version": script.version, "name": script.name, "checksum": script.checksum},
            ),
        ]
    if isinstance(script, Definition):
        return [
            (sql.SQL(script.text), None),
            (query("definition_record"), {"name": script.name, "checksum": script.checksum}),
        ]
    if isinstance(script, UnitColumn | Catalogue):
        return [(sql.SQL(script.text), None)]
    rows = script.mapping.rows()
    return [
        (
            query("mapping_record"),
            {
                "keys": [r[0] for r in rows],
                "values": [r[1] for r in rows],
                "defaults": [r[2] for r in rows],
                "descriptions": [r[3] for r in rows],
            },
        )
    ]


def _version(numbered: int, checksums: dict[str, str]) -> str:
    listing = "".join(f"{name} {checksum}\n" for name, checksum in sorted(checksums.items()))
    return f"{numbered}+{hashlib.sha256(listing.encode('utf-8')).hexdigest()[:8]}"


def _scalar(conn: psycopg.Connection, name: str, params: dict[str, object] | None = None) -> object:
    row = conn.execute(query(name), params).fetchone()
    return row[0] if row else None
