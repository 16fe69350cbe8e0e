-- What ue-resync installs, read back from the catalogue, and how the live catalogue differs from
-- what migrate recorded right after it last applied the definitions (resync.schema_objects).
-- Fragments, rendered with the mapping (daemon/ue_resync/render.py): `{verify.objects}` in the
-- definitions (installation.sql) and in migrate, which also runs `{verify.differences}` itself, so
-- a damaged schema (a function dropped by hand, grants lost in a restore) is still checked.

-- name: objects
-- One row per thing ue-resync installed, as comparable text: every function (its whole
-- definition: body, SECURITY DEFINER, SET clauses), view (its columns), trigger (the triggers calling a
-- function of schema resync, on the application's tables too), the owner of every object of
-- schema resync and of the schema, the rights that PUBLIC and ue-resync's three roles hold on
-- them (a DBA's grants to other roles are theirs), and the three roles. Nothing here reads a
-- relation: it runs on a schema missing its tables, and as any role.
WITH
ns AS (
    SELECT n.oid, n.nspname, n.nspowner, n.nspacl FROM pg_catalog.pg_namespace n
    WHERE n.nspname = 'resync'
),
roles AS (
    SELECT 0::oid AS oid, 'PUBLIC' AS name
    UNION ALL
    SELECT r.oid, r.rolname::text FROM pg_catalog.pg_roles r
    WHERE r.rolname IN ('resync_worker', 'resync_monitor', 'resync_requester')
),
-- Every object of the schema with its kind, name, owner and rights.
owned AS (
    SELECT 'schema' AS kind, quote_ident(ns.nspname) AS name, ns.nspowner AS owner,
           ns.nspacl AS acl
    FROM ns
    UNION ALL
    SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence' ELSE 'table' END,
           c.oid::regclass::text, c.relowner, c.relacl
    FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'S')
    UNION ALL
    SELECT 'function', p.oid::regprocedure::text, p.proowner, p.proacl
    FROM pg_catalog.pg_proc p JOIN ns ON ns.oid = p.pronamespace
    UNION ALL
    SELECT 'type', t.oid::regtype::text, t.typowner, NULL
    FROM pg_catalog.pg_type t JOIN ns ON ns.oid = t.typnamespace
    WHERE t.typtype = 'e'
),
-- Rights held by PUBLIC and ue-resync's roles, per object and per column.
rights AS (
    SELECT o.kind || ' ' || o.name AS object, r.name AS grantee, a.privilege_type AS privilege
    FROM owned o
    CROSS JOIN LATERAL aclexplode(o.acl) a
    JOIN roles r ON r.oid = a.grantee
    UNION ALL
    SELECT 'column ' || c.oid::regclass::text || '.' || quote_ident(att.attname), r.name,
           a.privilege_type
    FROM pg_catalog.pg_class c
    JOIN ns ON ns.oid = c.relnamespace
    JOIN pg_catalog.pg_attribute att ON att.attrelid = c.oid AND att.attacl IS NOT NULL
    CROSS JOIN LATERAL aclexplode(att.attacl) a
    JOIN roles r ON r.oid = a.grantee
)
-- A view by its columns: pg_get_viewdef is no fixed point (a dump and restore of a view prints
-- it back otherwise), and what a view reads is fingerprinted with the functions it calls.
SELECT o.kind, o.name, CASE o.kind
           WHEN 'function' THEN md5(pg_catalog.pg_get_functiondef(o.name::regprocedure))
           WHEN 'view' THEN (SELECT string_agg(quote_ident(a.attname) || ' '
                                               || pg_catalog.format_type(a.atttypid, a.atttypmod),
                                               ', ' ORDER BY a.attnum)
                             FROM pg_catalog.pg_attribute a
                             WHERE a.attrelid = o.name::regclass AND a.attnum > 0
                               AND NOT a.attisdropped)
           ELSE 'present' END AS detail
FROM owned o
UNION ALL
-- A sequence's owner follows its table's (serial and identity columns).
SELECT 'owner', o.kind || ' ' || o.name, pg_catalog.pg_get_userbyid(o.owner)
FROM owned o
WHERE o.kind <> 'sequence'
UNION ALL
SELECT 'grant', g.object || ' to ' || g.grantee, string_agg(g.privilege, ', ' ORDER BY g.privilege)
FROM rights g
GROUP BY g.object, g.grantee
UNION ALL
SELECT 'trigger', quote_ident(t.tgname) || ' on ' || t.tgrelid::regclass::text,
       md5(pg_catalog.pg_get_triggerdef(t.oid))
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN ns ON ns.oid = p.pronamespace
WHERE NOT t.tgisinternal
UNION ALL
SELECT 'role', quote_ident(r.name), 'present'
FROM roles r WHERE r.oid <> 0

-- name: differences
-- (Run with search_path = pg_catalog, pg_temp, as the record was made.)
-- What migrate recorded and the live catalogue no longer holds, or holds otherwise: one row per
-- difference, with a line for people. Objects added since (a DBA's index, grant or trigger)
-- are not differences. The firing modes are the DBA's (migrate keeps them), but the element
-- triggers work together: one enabled differently from the others is a difference (the two
-- for a replication subscriber, ENABLE REPLICA, apart).
WITH live AS ({verify.objects})
SELECT r.kind, r.name,
       CASE WHEN l.detail IS NULL THEN format('%s %s is missing', r.kind, r.name)
            WHEN r.kind = 'owner' THEN format('%s is owned by %s, installed by %s',
                                              r.name, l.detail, r.detail)
            WHEN r.kind = 'grant' THEN format('%s: holds %s, installed with %s',
                                              r.name, l.detail, r.detail)
            ELSE format('%s %s differs from what migrate installed', r.kind, r.name)
       END AS problem
FROM resync.schema_objects r
LEFT JOIN live l ON l.kind = r.kind AND l.name = r.name
WHERE l.detail IS DISTINCT FROM r.detail
UNION ALL
SELECT 'firing modes', {elements.table.name},
       format('the triggers on %s fire differently (%s): they work together; enable or disable '
              'them all', {elements.table.name},
              string_agg(format('%s %s', t.tgname,
                                CASE t.tgenabled WHEN 'O' THEN 'enabled' WHEN 'A' THEN 'always'
                                                 WHEN 'R' THEN 'replica' ELSE 'disabled' END),
                         ', ' ORDER BY t.tgname))
FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = {elements.regclass} AND t.tgname LIKE 'course\_unit\_elements\_resync\_%'
  AND t.tgname NOT LIKE 'course\_unit\_elements\_resync\_replica%'
HAVING count(DISTINCT t.tgenabled) > 1
UNION ALL
-- The two for a subscriber fire in ordinary sessions once `ENABLE TRIGGER ALL` (or USER: as
-- pg_restore --disable-triggers does after a table's data) turned them from ENABLE REPLICA to
-- ENABLE: every single-row write then pays a second look. DISABLE is the DBA's, kept.
SELECT 'trigger', quote_ident(t.tgname) || ' on ' || t.tgrelid::regclass::text,
       format('trigger %s on %s fires in every session (ENABLE TRIGGER ALL or USER does that); '
              'it is for a subscriber''s apply worker: ue-resync migrate puts it back to ENABLE '
              'REPLICA', t.tgname, t.tgrelid::regclass::text)
FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = {elements.regclass}
  AND t.tgname LIKE 'course\_unit\_elements\_resync\_replica%'
  AND t.tgenabled IN ('O', 'A')
ORDER BY 1, 2

-- name: record
-- What migrate installed, recorded at the end of its transaction. Names and definitions are read
-- under the search_path installation_differences() runs with: pg_get_viewdef and the like qualify
-- names by what the search_path hides.
SET LOCAL search_path = pg_catalog, pg_temp;
DELETE FROM resync.schema_objects;
INSERT INTO resync.schema_objects (kind, name, detail)
{verify.objects}

-- name: owner_repairs
-- The statements that give each object migrate recorded, and that now has another owner, back to
-- the role that owned it (or to the role running migrate, when that role does not exist here).
WITH live AS ({verify.objects})
SELECT format('ALTER %s OWNER TO %I', r.name,
              CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles o WHERE o.rolname = r.detail)
                   THEN r.detail ELSE current_user END) AS statement
FROM resync.schema_objects r
JOIN live l ON l.kind = r.kind AND l.name = r.name
WHERE r.kind = 'owner' AND l.detail <> r.detail
ORDER BY r.name LIKE 'schema %' DESC, r.name

-- name: save_firing_modes
-- The firing modes a DBA gave ue-resync's triggers (ENABLE ALWAYS on a subscriber, DISABLE),
-- kept in a transaction setting while the definitions are applied again: CREATE OR REPLACE
-- TRIGGER resets them. The two for a subscriber keep DISABLE only: their definitions end with
-- ENABLE REPLICA.
SELECT pg_catalog.set_config('ue_resync.firing_modes', coalesce(json_agg(json_build_array(
           t.tgrelid::regclass::text, t.tgname, t.tgenabled))::text, '[]'), true)
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'resync'
WHERE NOT t.tgisinternal AND t.tgenabled <> 'O'
  AND (t.tgenabled = 'D' OR t.tgname NOT LIKE 'course\_unit\_elements\_resync\_replica%')

-- name: restore_firing_modes
-- And given back once the triggers are replaced.
DO $$
DECLARE
    r json;
BEGIN
    FOR r IN SELECT * FROM json_array_elements(
        coalesce(nullif(current_setting('ue_resync.firing_modes', true), ''), '[]')::json)
    LOOP
        EXECUTE format('ALTER TABLE %s %s TRIGGER %I', r ->> 0,
                       CASE r ->> 2 WHEN 'A' THEN 'ENABLE ALWAYS' WHEN 'R' THEN 'ENABLE REPLICA'
                                    ELSE 'DISABLE' END,
                       r ->> 1);
    END LOOP;
END
$$

-- name: parameter_privileges
-- The settings the application's owner may change: `ALTER DATABASE app SET ue_resync.mode =
-- 'off'` (the rollback of docs/cutover.md) and `ALTER ROLE … SET ue_resync.…` need, for a role
-- that is not a superuser, the SET privilege on these parameters (PostgreSQL 15+: no loaded
-- module defines them; a session's own SET needs nothing). The owners (of the database, of the
-- elements table) who lack it, and the statement that grants it: migrate runs it when a
-- superuser migrates, and says it otherwise.
SELECT r.rolname::text AS role,
       format('GRANT SET ON PARAMETER ue_resync.mode, ue_resync.lock_timeout, '
              'ue_resync.debounce, ue_resync.debounce_max_wait TO %I', r.rolname) AS statement
FROM pg_catalog.pg_roles r
WHERE NOT r.rolsuper
  AND (r.oid = (SELECT d.datdba FROM pg_catalog.pg_database d
                WHERE d.datname = current_database())
       OR r.oid = (SELECT c.relowner FROM pg_catalog.pg_class c
                   WHERE c.oid = {elements.regclass}))
  AND NOT (SELECT bool_and(pg_catalog.has_parameter_privilege(r.oid, p, 'SET'))
           FROM unnest(array['ue_resync.mode', 'ue_resync.lock_timeout', 'ue_resync.debounce',
                             'ue_resync.debounce_max_wait']) p)
ORDER BY 1
