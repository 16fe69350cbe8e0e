"""What the database records of ue-resync: the numbered migrations and definitions applied
(resync.schema_migrations, resync.schema_definitions), the mapping installed (resync.mapping),
what is pending against this code, and the schema version the daemon checks at start."""

from __future__ import annotations

import psycopg

from ue_resync import mapping as mappings
from ue_resync import scripts
from ue_resync.mapping import Mapping
from ue_resync.queries import query
from ue_resync.scripts import Definition, Migration, MigrationError


def applied(conn: psycopg.Connection) -> dict[int, tuple[str, str]]:
    """{version: (name, checksum)} of the numbered migrations recorded in the database."""
    if not scalar(conn, "ledger_exists", {"table": "schema_migrations"}):
        return {}
    rows = conn.execute(query("migrations_applied")).fetchall()
    return {version: (name, checksum) for version, name, checksum in rows}


def applied_definitions(conn: psycopg.Connection) -> dict[str, str]:
    """{name: checksum} of the definitions files recorded in the database."""
    if not scalar(conn, "ledger_exists", {"table": "schema_definitions"}):
        return {}
    return dict(conn.execute(query("definitions_applied")).fetchall())


def installed_mapping(conn: psycopg.Connection) -> Mapping | None:
    """The mapping recorded in resync.mapping; None when there is none (nothing installed, or a
    database installed before the mapping existed, whose names are the defaults)."""
    if not scalar(conn, "ledger_exists", {"table": "mapping"}):
        return None
    rows = conn.execute(query("mapping_installed")).fetchall()
    return mappings.from_rows(rows) if rows else None


def pending(conn: psycopg.Connection) -> list[Migration]:
    """The numbered migrations to apply; MigrationError when the ledger rules them out."""
    done = applied(conn)
    shipped = scripts.available()
    base = shipped[0]
    top = max(done, default=0)
    if top > scripts.code_version():
        raise MigrationError(
            f"the database has schema version {top}, newer than this ue-resync "
            f"({scripts.code_version()}): upgrade ue-resync"
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
            and recorded[1] not in scripts.EARLIER_CHECKSUMS.get(migration.version, ())
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
    shipped = scripts.definitions(mapping)
    if applied_definitions(conn) == {d.name: d.checksum for d in shipped}:
        return []
    return shipped


def check_current(conn: psycopg.Connection) -> str:
    """The database's schema version, or MigrationError when it is not this code's."""
    version = max(applied(conn), default=0)
    recorded = applied_definitions(conn)
    here = scripts.version_of(version, recorded) if recorded else str(version)
    needed = scripts.code_schema_version(installed_mapping(conn) or mappings.DEFAULT)
    if version > scripts.code_version():
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


def scalar(conn: psycopg.Connection, name: str, params: dict[str, object] | None = None) -> object:
    row = conn.execute(query(name), params).fetchone()
    return row[0] if row else None
