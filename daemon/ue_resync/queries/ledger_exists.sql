-- Whether a ledger table (schema_migrations, schema_definitions) exists, read from the catalogue
-- with this statement's snapshot: to_regclass() would answer from this backend's relation
-- cache, stale when another installer created the ledger meanwhile.
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'resync' AND c.relname = %(table)s
) AS present
