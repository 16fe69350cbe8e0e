"""Installs and upgrades the schema from `sql/`.

- `sql/migrations/NNNN_name.sql`: numbered, forward only, each applied once (tables, columns,
  indexes, data moves, pgqueuer's DDL). The first is the baseline: it is applied to an empty
  ledger only; a database whose ledger already reaches its version was migrated by the files the
  baseline replaced, and keeps their rows as history.
- `sql/definitions/<concern>.sql`: functions, triggers, views and grants, one current definition
  each, re-runnable. When the checksum of any of them differs from the one recorded, all of them
  are applied again, in the order of `DEFINITIONS`: later files use earlier ones, and the grants
  come last so that they cover every object.

`apply` runs everything pending in one transaction, under an advisory lock, recording each file
in `resync.schema_migrations` / `resync.schema_definitions`: a numbered migration that renames
or drops what the definitions use is never seen without the definitions that follow it.
`print_sql` renders the very same statements for a DBA who applies them with `psql -f`.

The schema version is `N+D`: N the newest numbered migration, D the first 8 hex digits of a
sha256 over the definitions' names and checksums. The daemon runs only on its own version."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import ClientCursor, sql

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
    "monitoring_views",
    "roles_and_grants",
)


class MigrationError(RuntimeError):
    """The schema on disk and in the database disagree; the message says how."""


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
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


Script = Migration | Definition


def sql_dir() -> Path:
    """`ue_resync/sql` in an installed wheel; the checkout's `sql/` otherwise."""
    packaged = Path(str(resources.files("ue_resync").joinpath("sql")))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sql"


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


def definitions(directory: Path | None = None) -> list[Definition]:
    """The definitions files, in the order they are applied."""
    where = directory or sql_dir() / "definitions"
    names = sorted(p.stem for p in where.glob("*.sql"))
    if names != sorted(DEFINITIONS):
        raise MigrationError(
            f"{where}: the definitions files must be exactly {', '.join(DEFINITIONS)} "
            f"(found {', '.join(names) or 'none'})"
        )
    return [Definition(n, (where / f"{n}.sql").read_text("utf-8")) for n in DEFINITIONS]


def code_version() -> int:
    """The newest numbered migration this code ships."""
    return available()[-1].version


def code_schema_version() -> str:
    """The schema version this code was written for, `N+D`."""
    return _version(code_version(), {d.name: d.checksum for d in definitions()})


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
        if recorded and recorded[0] == migration.name and recorded[1] != migration.checksum:
            raise MigrationError(
                f"{migration.name} was applied with another content (checksum "
                f"{recorded[1][:12]}…); migrations are never edited once applied"
            )
    if not done:
        return shipped
    return [m for m in shipped[1:] if m.version not in done]


def pending_definitions(conn: psycopg.Connection) -> list[Definition]:
    """All the definitions when any differs from what the database recorded, else none."""
    shipped = definitions()
    if applied_definitions(conn) == {d.name: d.checksum for d in shipped}:
        return []
    return shipped


def plan(conn: psycopg.Connection) -> list[Script]:
    """What `apply` would run now, in order."""
    todo: list[Script] = []
    todo += pending(conn)
    todo += pending_definitions(conn)
    return todo


def apply(conn: psycopg.Connection) -> list[Script]:
    """Apply what is pending, in one transaction; returns what this call applied (an installer
    that held the lock before us may have applied it all: we wait, then find nothing to do)."""
    conn.autocommit = True
    if not plan(conn):
        return []
    with conn.transaction():
        conn.execute(query("migration_lock"))
        todo = plan(conn)
        for script in todo:
            conn.execute(script.text.encode("utf-8"))
            conn.execute(*_record(script))
        if any(isinstance(s, Definition) for s in todo):
            conn.execute(query("definitions_forget"), {"names": list(DEFINITIONS)})
    return todo


def print_sql(conn: psycopg.Connection) -> str:
    """A psql script applying what is pending: the statements `apply` runs, in the same single
    transaction. Empty when nothing is pending."""
    todo = plan(conn)
    if not todo:
        return ""
    cursor = ClientCursor(conn)
    numbered = sum(isinstance(s, Migration) for s in todo)
    parts = [
        f"-- ue-resync: {numbered} pending migration(s), {len(todo) - numbered} definitions "
        "file(s), apply with: psql -X -f FILE",
        "\\set ON_ERROR_STOP on",
        "BEGIN;",
        cursor.mogrify(query("migration_lock")).strip() + ";",
    ]
    for script in todo:
        label = script.name if isinstance(script, Migration) else f"definitions/{script.name}"
        record = cursor.mogrify(*_record(script)).strip() + ";"
        parts += [f"\n-- {label}", script.text.strip(), record]
    if numbered < len(todo):
        forget = cursor.mogrify(query("definitions_forget"), {"names": list(DEFINITIONS)})
        parts += ["", forget.strip() + ";"]
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"


def check_current(conn: psycopg.Connection) -> str:
    """The database's schema version, or MigrationError when it is not this code's."""
    version = max(applied(conn), default=0)
    recorded = applied_definitions(conn)
    here = _version(version, recorded) if recorded else str(version)
    needed = code_schema_version()
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


def _version(numbered: int, checksums: dict[str, str]) -> str:
    listing = "".join(f"{name} {checksum}\n" for name, checksum in sorted(checksums.items()))
    return f"{numbered}+{hashlib.sha256(listing.encode('utf-8')).hexdigest()[:8]}"


def _record(script: Script) -> tuple[sql.SQL, dict[str, object]]:
    if isinstance(script, Migration):
        params: dict[str, object] = {"version": script.version}
        return query("migration_record"), {
            **params,
            "name": script.name,
            "checksum": script.checksum,
        }
    return query("definition_record"), {"name": script.name, "checksum": script.checksum}


def _scalar(conn: psycopg.Connection, name: str, params: dict[str, object] | None = None) -> object:
    row = conn.execute(query(name), params).fetchone()
    return row[0] if row else None
