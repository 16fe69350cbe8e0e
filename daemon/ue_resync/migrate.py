"""Applies the forward-only migrations of `sql/` in order, each in its own transaction, under an
advisory lock, recording each version in `resync.schema_migrations`. `print_sql` renders the very
same statements for a DBA who applies them with `psql -f`."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import ClientCursor

from ue_resync.queries import query

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migrations on disk and in the database disagree; the message says how."""


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def migrations_dir() -> Path:
    """`ue_resync/migrations` in an installed wheel; the checkout's `sql/` otherwise."""
    packaged = Path(str(resources.files("ue_resync").joinpath("migrations")))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sql"


def available(directory: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((directory or migrations_dir()).glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), path.stem, path.read_text("utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3… without gaps: {versions}")
    return found


def code_version() -> int:
    """The schema version this code was written for: the newest migration it ships."""
    return available()[-1].version


def applied(conn: psycopg.Connection) -> dict[int, tuple[str, str]]:
    """{version: (name, checksum)} of the migrations recorded in the database."""
    if not _scalar(conn, "migrations_ledger_exists"):
        return {}
    rows = conn.execute(query("migrations_applied")).fetchall()
    return {version: (name, checksum) for version, name, checksum in rows}


def pending(conn: psycopg.Connection) -> list[Migration]:
    done = applied(conn)
    newer = [v for v in done if v > code_version()]
    if newer:
        raise MigrationError(
            f"the database has schema version {max(newer)}, newer than this ue-resync "
            f"({code_version()}): upgrade ue-resync"
        )
    for migration in available():
        recorded = done.get(migration.version)
        if recorded and recorded[1] != migration.checksum:
            raise MigrationError(
                f"{migration.name} was applied with another content (checksum "
                f"{recorded[1][:12]}…); migrations are never edited once applied"
            )
    return [m for m in available() if m.version not in done]


def apply(conn: psycopg.Connection) -> list[Migration]:
    """Apply what is pending; returns what this call applied (another installer may have done
    some meanwhile: it holds the lock, we wait, then skip what it recorded)."""
    conn.autocommit = True
    done: list[Migration] = []
    for migration in pending(conn):
        with conn.transaction():
            conn.execute(query("migration_lock"))
            if _scalar(conn, "migrations_ledger_exists") and _scalar(
                conn, "migration_is_applied", {"version": migration.version}
            ):
                continue
            conn.execute(migration.text.encode("utf-8"))
            conn.execute(query("migration_record"), _record(migration))
        done.append(migration)
    return done


def print_sql(conn: psycopg.Connection) -> str:
    """A psql script applying what is pending: the statements `apply` runs, in the same
    transactions. Empty when nothing is pending."""
    todo = pending(conn)
    if not todo:
        return ""
    cursor = ClientCursor(conn)
    parts = [
        f"-- ue-resync: {len(todo)} pending migration(s), apply with: psql -X -f FILE",
        "\\set ON_ERROR_STOP on",
    ]
    for migration in todo:
        parts += [
            f"\n-- {migration.name}",
            "BEGIN;",
            cursor.mogrify(query("migration_lock")).strip() + ";",
            migration.text.strip(),
            cursor.mogrify(query("migration_record"), _record(migration)).strip() + ";",
            "COMMIT;",
        ]
    return "\n".join(parts) + "\n"


def check_current(conn: psycopg.Connection) -> int:
    """The database's schema version, or MigrationError when it does not match this code."""
    done = applied(conn)
    version = max(done, default=0)
    if version < code_version():
        raise MigrationError(
            f"database schema is at version {version}, this ue-resync needs "
            f"{code_version()}: run `ue-resync migrate`"
        )
    if version > code_version():
        raise MigrationError(
            f"database schema is at version {version}, newer than this ue-resync "
            f"({code_version()}): upgrade ue-resync"
        )
    return version


def _record(migration: Migration) -> dict[str, object]:
    return {"version": migration.version, "name": migration.name, "checksum": migration.checksum}


def _scalar(conn: psycopg.Connection, name: str, params: dict[str, object] | None = None) -> object:
    row = conn.execute(query(name), params).fetchone()
    return row[0] if row else None
