-- The mapping the installed definitions were rendered from (after ledger_exists for 'mapping').
SELECT key, value FROM resync.mapping ORDER BY key
