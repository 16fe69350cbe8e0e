-- Versions already applied, with the checksum each had (after migrations_ledger_exists).
SELECT version, name, checksum FROM resync.schema_migrations ORDER BY version
