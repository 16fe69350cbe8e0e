-- The search_path as it was, while it becomes the one catalogue_differences() runs with.
SELECT current_setting('search_path') AS saved,
       set_config('search_path', 'pg_catalog, pg_temp', false) AS pinned
