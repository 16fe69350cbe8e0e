-- Whether migrate recorded what it installed (after ledger_exists for 'schema_objects').
SELECT EXISTS (SELECT 1 FROM resync.schema_objects) AS recorded
