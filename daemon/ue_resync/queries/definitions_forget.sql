-- A definitions file no longer shipped: its objects are dropped by a numbered migration; its
-- ledger row goes with the definitions that replace it.
DELETE FROM resync.schema_definitions WHERE name <> ALL (%(names)s::text[])
