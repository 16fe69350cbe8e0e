-- What `ue-resync migrate` reads of the application's tables before it changes anything, and
-- what `ue-resync migrate --preview` shows (daemon/ue_resync/preflight.py). Read-only queries,
-- each under a `-- name:` header, rendered with the mapping like the definitions
-- (daemon/ue_resync/render.py); %(name)s are parameters.

-- name: columns
-- The columns of a table, with their type and its category (N numeric, B boolean, D date and
-- time, U user-defined, S string, E enum…); no row when the table does not exist.
SELECT a.attname::text AS name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       coalesce(nullif(b.typcategory, 'X'), t.typcategory)::text AS category
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
-- A domain is judged by its base type.
LEFT JOIN pg_catalog.pg_type b ON b.oid = t.typbasetype AND t.typtype = 'd'
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p')
ORDER BY a.attnum

-- name: leading_index
-- Whether an index of the table leads with the column: the sync reads a UE's elements by it.
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND a.attname = %(column)s
)

-- name: statuses
-- The status values the elements hold, with how many rows hold each (NULL included).
SELECT {e.status}::text AS status, count(*) AS n
FROM {elements} e
GROUP BY 1
ORDER BY 1 NULLS LAST

-- name: preview
-- What the first sync would write: every UE (auto sync on) whose stored columns differ from
-- the recompute rule, the columns that would change, and how its elements were counted.
SELECT d.course_unit_id, d.code, d.differences,
       st.counted, st.elements, st.deleted, coalesce(st.by_status, '{{}}') AS by_status
FROM ({rule.drift}) d
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE {rule.counted}) AS counted,
           count(*) AS elements,
           count(*) FILTER (WHERE {e.deleted_at} IS NOT NULL) AS deleted,
           (SELECT jsonb_object_agg(coalesce(k.status, 'NULL'), k.n)
            FROM (SELECT {e.status}::text AS status, count(*) AS n
                  FROM {elements} e
                  WHERE {e.course_unit_id} = d.course_unit_id AND {e.deleted_at} IS NULL
                  GROUP BY 1) k) AS by_status
    FROM {elements} e
    WHERE {e.course_unit_id} = d.course_unit_id
) st ON true
ORDER BY d.course_unit_id
