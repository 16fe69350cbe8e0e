-- Whether ue-resync's row trigger is on the elements table: false on a first install.
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %(schema)s AND c.relname = %(table)s
      AND t.tgname = 'course_unit_elements_resync_row'
) AS installed
