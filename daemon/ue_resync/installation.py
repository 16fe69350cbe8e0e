"""What ue-resync installed, checked against the live system catalog (sql/verify.sql): the
differences migrate repairs and `migrate --verify` lists, the owners to give back, and what it
cannot repair itself (the DBA's firing modes, a superuser's grant)."""

from __future__ import annotations

import psycopg

from ue_resync import ledger, preflight, render
from ue_resync import mapping as mappings
from ue_resync.mapping import Mapping
from ue_resync.queries import query

# What a damaged installation raises where it is used: rights lost in a restore, an object
# dropped by hand, the schema gone. What to run about it, for the messages that name it.
MISSING = (
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.UndefinedObject,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.InvalidSchemaName,
)
REPAIR = "`ue-resync migrate --verify` lists what is missing, `ue-resync migrate` repairs it"


def differences(conn: psycopg.Connection, mapping: Mapping) -> list[tuple[str, str, str]]:
    """(kind, name, problem) for each object migrate recorded that the catalogue no longer holds
    as it was (sql/verify.sql); none before anything was recorded."""
    if not ledger.scalar(conn, "ledger_exists", {"table": "schema_objects"}):
        return []
    rows = _rows(conn, "differences", mapping)
    found = [(str(k), str(n), str(p)) for k, n, p in rows]
    if ledger.applied_definitions(conn) and not ledger.scalar(conn, "objects_recorded"):
        found.append(("record", "resync.schema_objects", "nothing recorded of what was installed"))
    return found


def verify(conn: psycopg.Connection, mapping: Mapping | None = None) -> list[str]:
    """Read-only: one line per difference between what this ue-resync installs and the
    database: the ledger behind the code, the application's tables against the mapping, the
    catalogue against what migrate recorded. Empty when all is as installed."""
    if not ledger.scalar(conn, "ledger_exists", {"table": "schema_migrations"}):
        return ["ue-resync is not installed in this database (no schema resync): run migrate"]
    chosen = mapping or ledger.installed_mapping(conn) or mappings.DEFAULT
    lines = []
    behind = ledger.pending(conn)
    if behind:
        lines.append(
            f"{len(behind)} migration(s) not applied ({', '.join(m.name for m in behind)})"
        )
    elif ledger.pending_definitions(conn, chosen):
        lines.append("the definitions are not this ue-resync's (another version or mapping)")
    lines += preflight.check(conn, chosen).problems
    lines += [problem for _, _, problem in differences(conn, chosen)]
    return lines


def not_repaired(conn: psycopg.Connection, mapping: Mapping) -> list[str]:
    """What is left once migrate re-applied what it installs: the DBA's (mixed firing modes),
    and the SET privileges on the ue_resync.* settings only a superuser may grant."""
    left = [f"not repaired: {problem}" for _, _, problem in differences(conn, mapping)]
    left += [
        f"{role} may not ALTER DATABASE/ROLE … SET ue_resync.* (the rollback of "
        f"docs/cutover.md): as a superuser, run {statement}"
        for role, statement in parameter_privileges(conn, mapping)
    ]
    return left


def parameter_privileges(conn: psycopg.Connection, mapping: Mapping) -> list[tuple[str, str]]:
    """(role, GRANT statement) for each owner who may not yet ALTER … SET ue_resync.*."""
    rows = conn.execute(render.query("verify.sql", "parameter_privileges", mapping)).fetchall()
    return [(str(role), str(statement)) for role, statement in rows]


def owner_repairs(conn: psycopg.Connection, mapping: Mapping) -> str:
    rows = _rows(conn, "owner_repairs", mapping)
    return "".join(f"{statement};\n" for (statement,) in rows)


def _rows(conn: psycopg.Connection, name: str, mapping: Mapping) -> list[tuple[object, ...]]:
    """A query of sql/verify.sql, read under the search_path its record was made with (names and
    definitions are printed qualified by what the search_path hides)."""
    saved = ledger.scalar(conn, "search_path_pin")
    try:
        return conn.execute(render.query("verify.sql", name, mapping)).fetchall()
    finally:
        conn.execute(query("search_path_restore"), {"search_path": saved})
