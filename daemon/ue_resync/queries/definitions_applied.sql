-- The definitions files applied, with the checksum each had (after ledger_exists).
SELECT name, checksum FROM resync.schema_definitions ORDER BY name
