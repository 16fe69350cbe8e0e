-- What ue-resync installed, checked against the live catalogue (sql/verify.sql): for the alert
-- `catalogue` (monitoring_views.sql) and the daemon's start. migrate runs the same query itself,
-- so a schema damaged to the point of missing this function is still checked.

-- resync.catalogue_differences: one row per object that migrate recorded and the catalogue no
-- longer holds as it was (missing, replaced, another owner, rights lost), and the element
-- triggers when they fire differently from each other. Writes nothing.
-- Why SECURITY DEFINER: the record is read with the owner's rights; the catalogue is readable
--   by any role.
CREATE OR REPLACE FUNCTION resync.catalogue_differences()
RETURNS TABLE (kind text, name text, problem text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    {verify.differences}
$$;
