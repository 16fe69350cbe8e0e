"""The schema as comparable text, and databases built by the migrations of another time: shared
by the migration tests (tests/integration/test_migrate*.py, test_legacy_upgrade.py) and the CLI's
(tests/e2e)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg

from ue_resync import scripts

# What `migrate` applies when the definitions are applied (again): the firing modes saved, every
# definitions file, the modes restored, what was installed recorded, the mapping recorded.
DEFINITIONS_STEPS = [
    "save_firing_modes",
    *scripts.DEFINITIONS,
    "restore_firing_modes",
    "record",
    "mapping",
]
# What `migrate` applies to a database that has only the application's tables, in order.
EVERYTHING = [m.name for m in scripts.available()] + DEFINITIONS_STEPS

# Today's 14 numbered files as they stood before the baseline replaced them, frozen.
LEGACY_SQL = Path(__file__).resolve().parent / "fixtures" / "legacy_sql"

# Everything ue-resync owns or changes, as comparable text: relations (with their options and
# grants), columns, functions (whole definitions, grants), triggers, indexes, constraints,
# views, types, the schema's grants, the error policy. Not the ledgers: a database migrated
# before the baseline keeps its history there.
SNAPSHOT = """
WITH
rels AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.reloptions, c.relacl
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'resync'
       OR (n.nspname = 'public' AND c.relname IN ('course_units', 'course_unit_elements'))
)
SELECT 'relation', format('%s.%s %s options %s acl %s', nspname, relname, relkind,
                          reloptions, relacl)
FROM rels
UNION ALL
SELECT 'column', format('%s.%s %s %s default %s acl %s', r.relname, a.attname,
                        format_type(a.atttypid, a.atttypmod),
                        CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
                        pg_get_expr(d.adbin, d.adrelid), a.attacl)
FROM rels r
JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE r.relkind IN ('r', 'v')
UNION ALL
SELECT 'function', format('%s acl %s', pg_get_functiondef(p.oid), p.proacl)
FROM pg_proc p WHERE p.pronamespace = 'resync'::regnamespace
UNION ALL
SELECT 'trigger', format('%s enabled %s', pg_get_triggerdef(t.oid), t.tgenabled)
FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION ALL
SELECT 'index', pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN rels r ON r.oid = i.indrelid
UNION ALL
SELECT 'constraint', format('%s %s', con.conname, pg_get_constraintdef(con.oid))
FROM pg_constraint con JOIN rels r ON r.oid = con.conrelid
UNION ALL
SELECT 'view', format('%s %s', r.relname, pg_get_viewdef(r.oid))
FROM rels r WHERE r.relkind = 'v'
UNION ALL
SELECT 'type', format('%s %s', t.typname,
                      (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                       FROM pg_enum e WHERE e.enumtypid = t.oid))
FROM pg_type t WHERE t.typnamespace = 'resync'::regnamespace AND t.typtype = 'e'
UNION ALL
SELECT 'schema', format('%s acl %s', nspname, nspacl)
FROM pg_namespace WHERE nspname = 'resync'
UNION ALL
SELECT 'policy', format('%L %s %s %s', sqlstate_pattern, reason_prefix, delay, auto_resync)
FROM resync.error_policy
ORDER BY 1, 2
"""


# Every object of the database outside the system schemas, and the files behind each relation,
# as comparable text: a refused migrate must leave all of it as it was.
OBJECTS = """
SELECT 'schema', n.nspname::text FROM pg_namespace n
WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
UNION ALL
SELECT 'relation', format('%s.%s %s file %s acl %s', n.nspname, c.relname, c.relkind,
                          c.relfilenode, c.relacl)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
UNION ALL
SELECT 'column', format('%s.%s %s %s', a.attrelid::regclass, a.attname,
                        format_type(a.atttypid, a.atttypmod), a.attnotnull)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
UNION ALL
SELECT 'trigger', format('%s %s', pg_get_triggerdef(t.oid), t.tgenabled)
FROM pg_trigger t WHERE NOT t.tgisinternal
UNION ALL
SELECT 'function', p.oid::regprocedure::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
UNION ALL
SELECT 'role', rolname::text FROM pg_roles WHERE rolname LIKE 'resync\\_%'
ORDER BY 1, 2
"""


def objects(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """The database's objects (OBJECTS), for "nothing was changed"."""
    return [(kind, text) for kind, text in conn.execute(OBJECTS).fetchall()]


def snapshot(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [(kind, text) for kind, text in conn.execute(SNAPSHOT).fetchall()]


def kinds(snap: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind, _ in snap:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def migrations_ledger(dsn: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT version, name, checksum FROM resync.schema_migrations ORDER BY version"
        ).fetchall()
    return [(int(v), str(n), str(c)) for v, n, c in rows]


def definitions_ledger(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT name, checksum FROM resync.schema_definitions").fetchall()
    return {str(n): str(c) for n, c in rows}


def migrate_the_old_way(dsn: str) -> None:
    """Build the schema as the code before the baseline did: each of the 14 files in its own
    transaction, recorded in the ledger with its checksum."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for path in sorted(LEGACY_SQL.glob("*.sql")):
            text = path.read_text("utf-8")
            with conn.transaction():
                conn.execute(text.encode("utf-8"))
                conn.execute(
                    "INSERT INTO resync.schema_migrations (version, name, checksum) "
                    "VALUES (%s, %s, %s)",
                    (int(path.name[:4]), path.stem, hashlib.sha256(text.encode()).hexdigest()),
                )
