-- Record the mapping the definitions were rendered from, in migrate's transaction: its rows
-- replace whatever was there.
WITH recorded AS (
    INSERT INTO resync.mapping AS r (key, value, is_default, description)
    SELECT m.key, m.value::jsonb, m.is_default, m.description
    FROM unnest(%(keys)s::text[], %(values)s::text[], %(defaults)s::boolean[],
                %(descriptions)s::text[]) AS m(key, value, is_default, description)
    ON CONFLICT (key) DO UPDATE
    SET value = excluded.value, is_default = excluded.is_default,
        description = excluded.description
)
DELETE FROM resync.mapping WHERE key <> ALL (%(keys)s::text[])
