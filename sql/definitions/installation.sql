-- What ue-resync installed, checked against the live system catalog (sql/verify.sql): for the
-- alert `installation` (monitoring_views.sql) and the daemon's start. migrate runs the same query itself,
-- so a schema damaged to the point of missing this function is still checked.

-- resync.installation_differences: one row per object that migrate recorded and the catalog no
-- longer holds as it was (missing, replaced, another owner, rights lost), and the element
-- triggers when they fire differently from each other. Writes nothing.
-- Why SECURITY DEFINER: the record is read with the owner's rights; the catalog is readable
--   by any role.
CREATE OR REPLACE FUNCTION resync.installation_differences()
RETURNS TABLE (kind text, name text, problem text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    {verify.differences}
$$;
