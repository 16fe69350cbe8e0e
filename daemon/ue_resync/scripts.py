"""What `ue-resync migrate` applies, read from `sql/`: the numbered migrations, the definitions
rendered with the mapping, and the steps around them, each with the statements that apply and
record it.

- `sql/migrations/NNNN_name.sql`: numbered, forward only, each applied once (tables, columns,
  indexes, data moves, pgqueuer's DDL) in schema resync. The first is the baseline: it is
  applied to an empty ledger only; a database whose ledger already reaches its version was
  migrated by the files the baseline replaced, and keeps their rows as history.
- `sql/definitions/<concern>.sql`: functions, triggers, views and grants, one current definition
  each, re-runnable, rendered with the mapping (render.py), applied all again in the order of
  `DEFINITIONS` whenever one changed: later files use earlier ones, and the grants come last so
  that they cover every object. A mapping change is therefore a definitions change.

The schema version is `N+D`: N the newest numbered migration, D the first 8 hex digits of a
sha256 over the rendered definitions' names and checksums."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from psycopg import sql

from ue_resync import mapping as mappings
from ue_resync import render
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
    "installation",
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
class Step:
    """A step around the definitions, rendered from sql/verify.sql: the owners given back before
    them (`owner_repairs`, its statements in `text`), the DBA's firing modes saved and restored
    around them, what was installed recorded after them (`record`)."""

    name: str  # owner_repairs | save_firing_modes | restore_firing_modes | record
    text: str


Script = Migration | Definition | UnitColumn | MappingRecord | Step


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
    return version_of(code_version(), {d.name: d.checksum for d in definitions(mapping)})


def step(name: str, mapping: Mapping) -> Step:
    return Step(name, render.query("verify.sql", name, mapping))


def unit_column(mapping: Mapping, column: str) -> UnitColumn:
    schema, table = mapping.table("units")
    text = query("add_unit_column").format(
        table=sql.Identifier(schema, table), column=sql.Identifier(column)
    )
    return UnitColumn(f"{schema}.{table}.{column}", text.as_string(None))


def statements(script: Script) -> list[tuple[sql.SQL, dict[str, object] | None]]:
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
    if isinstance(script, UnitColumn | Step):
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


def version_of(numbered: int, checksums: dict[str, str]) -> str:
    listing = "".join(f"{name} {checksum}\n" for name, checksum in sorted(checksums.items()))
    return f"{numbered}+{hashlib.sha256(listing.encode('utf-8')).hexdigest()[:8]}"
