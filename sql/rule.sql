-- The recompute rule: what a UE holds once synced from its elements, written once. Fragments,
-- not objects: `ue-resync migrate` renders them with the mapping (daemon/ue_resync/render.py)
-- where a definition or a query names them, {rule.NAME}: the row path's optimistic write
-- (definitions/element_triggers.sql), the set-based sync (definitions/sync.sql), the drift
-- (definitions/consistency.sql) and `migrate --preview` (preflight.sql).
--
-- Aliases every fragment assumes: e an element row; u the UE row as stored; s the UE's sums
-- (NULL when no element counts, as from a LEFT JOIN); x what the UE should hold: the columns
-- of `expected`, and hours_distribution computed from them by `distribution`.
-- Placeholders: {e.KEY} and {u.KEY} are the mapped columns (resync.mapping; an optional column
-- the catalogue lacks renders as its neutral value: a flag as true, a soft-delete as NULL);
-- a line ending in "-- when units.KEY" is left out when the catalogue has no such column.

-- name: counted
-- An element counts when its status is one of the counted values and it is not soft-deleted.
{e.status}::text IN ({counted_statuses}) AND {e.deleted_at} IS NULL

-- name: sums
-- The sums over a UE's counted elements: a select list over e, aggregated per UE by the caller.
sum(coalesce({e.credits}::numeric, 0))     AS credits,
sum(coalesce({e.hours_cm}::numeric, 0))    AS hours_cm,
sum(coalesce({e.hours_td}::numeric, 0))    AS hours_td,
sum(coalesce({e.hours_tp}::numeric, 0))    AS hours_tp,
sum(coalesce({e.hours_total}::numeric, 0)) AS hours_total,
count(*)::integer                          AS elements_count

-- name: expected
-- What the UE should hold: a select list over u and s. Its two flags say whether its credits
-- and its hours follow the elements; the count always does.
CASE WHEN {u.sync_credits_with_elements}
     THEN coalesce(s.credits, 0) ELSE {u.credits}::numeric END         AS credits,
CASE WHEN {u.sync_hours_with_elements}
     THEN coalesce(s.hours_cm, 0) ELSE {u.hours_cm}::numeric END       AS hours_cm,
CASE WHEN {u.sync_hours_with_elements}
     THEN coalesce(s.hours_td, 0) ELSE {u.hours_td}::numeric END       AS hours_td,
CASE WHEN {u.sync_hours_with_elements}
     THEN coalesce(s.hours_tp, 0) ELSE {u.hours_tp}::numeric END       AS hours_tp,
CASE WHEN {u.sync_hours_with_elements}
     THEN coalesce(s.hours_total, 0) ELSE {u.hours_total}::numeric END AS hours_total,
coalesce(s.elements_count, 0)                                          AS elements_count

-- name: distribution
-- hours_distribution from x: each kind's share of the total in %, one decimal; all zero when
-- there are no hours.
CASE WHEN coalesce(x.hours_total, 0) <= 0 THEN '{{"cm": 0, "td": 0, "tp": 0}}'::jsonb
     ELSE jsonb_build_object('cm', round(x.hours_cm * 100 / x.hours_total, 1),
                             'td', round(x.hours_td * 100 / x.hours_total, 1),
                             'tp', round(x.hours_tp * 100 / x.hours_total, 1))
END

-- name: assign
-- The write of x into the UE: a SET list (no trailing comma; the caller adds its timestamps).
{units.credits}            = x.credits,
{units.hours_cm}           = x.hours_cm,
{units.hours_td}           = x.hours_td,
{units.hours_tp}           = x.hours_tp,
{units.hours_total}        = x.hours_total,
{units.hours_distribution} = x.hours_distribution,  -- when units.hours_distribution
{units.elements_count}     = x.elements_count

-- name: stored
-- What the UE holds, in the terms of expected: a select list over u.
{u.credits}::numeric           AS credits,
{u.hours_cm}::numeric          AS hours_cm,
{u.hours_td}::numeric          AS hours_td,
{u.hours_tp}::numeric          AS hours_tp,
{u.hours_total}::numeric       AS hours_total,
{u.elements_count}::integer    AS elements_count,
{u.hours_distribution}::jsonb  AS hours_distribution

-- name: differences
-- The columns where the stored UE (u, through `stored` as t) differs from x, by the
-- application's column names: {{"hours_cm": [119, 118]}}. Empty when in sync.
jsonb_strip_nulls(jsonb_build_object(
    {units.credits.name},        CASE WHEN t.credits IS DISTINCT FROM x.credits
                                      THEN jsonb_build_array(t.credits, x.credits) END,
    {units.hours_cm.name},       CASE WHEN t.hours_cm IS DISTINCT FROM x.hours_cm
                                      THEN jsonb_build_array(t.hours_cm, x.hours_cm) END,
    {units.hours_td.name},       CASE WHEN t.hours_td IS DISTINCT FROM x.hours_td
                                      THEN jsonb_build_array(t.hours_td, x.hours_td) END,
    {units.hours_tp.name},       CASE WHEN t.hours_tp IS DISTINCT FROM x.hours_tp
                                      THEN jsonb_build_array(t.hours_tp, x.hours_tp) END,
    {units.hours_total.name},    CASE WHEN t.hours_total IS DISTINCT FROM x.hours_total
                                      THEN jsonb_build_array(t.hours_total, x.hours_total) END,
    {units.hours_distribution.name},  -- when units.hours_distribution
                                 CASE WHEN t.hours_distribution IS DISTINCT FROM x.hours_distribution  -- when units.hours_distribution
                                      THEN jsonb_build_array(t.hours_distribution, x.hours_distribution) END,  -- when units.hours_distribution
    {units.elements_count.name}, CASE WHEN t.elements_count IS DISTINCT FROM x.elements_count
                                      THEN jsonb_build_array(t.elements_count, x.elements_count) END))

-- name: expected_units
-- Every UE with auto sync on and what it should hold: a query of x's columns (id, code, the
-- expected ones and hours_distribution), sums in one pass over the elements.
WITH sums AS (
    SELECT {e.course_unit_id} AS id,
           {rule.sums}
    FROM {elements} e
    WHERE {rule.counted}
    GROUP BY {e.course_unit_id}
)
SELECT x.*, {rule.distribution} AS hours_distribution
FROM (SELECT {u.id}::bigint AS id, {u.code}::text AS code,
             {rule.expected}
      FROM {units} u
      LEFT JOIN sums s ON s.id = {u.id}
      WHERE {u.auto_sync_enabled}) x

-- name: drift
-- The UEs whose stored columns differ from what they should hold: a query, stored next to
-- expected by ue-resync's names, and `differences` by the application's.
SELECT x.id AS course_unit_id, x.code,
       t.credits AS stored_credits,               x.credits AS expected_credits,
       t.hours_cm AS stored_hours_cm,             x.hours_cm AS expected_hours_cm,
       t.hours_td AS stored_hours_td,             x.hours_td AS expected_hours_td,
       t.hours_tp AS stored_hours_tp,             x.hours_tp AS expected_hours_tp,
       t.hours_total AS stored_hours_total,       x.hours_total AS expected_hours_total,
       t.elements_count AS stored_elements_count, x.elements_count AS expected_elements_count,
       t.hours_distribution AS stored_hours_distribution,
       x.hours_distribution AS expected_hours_distribution,
       d.differences,
       {u.last_element_sync}::timestamptz AS last_element_sync,
       {u.last_job_sync}::timestamptz AS last_job_sync
FROM ({rule.expected_units}) x
JOIN {units} u ON {u.id} = x.id
CROSS JOIN LATERAL (SELECT {rule.stored}) t
CROSS JOIN LATERAL (SELECT {rule.differences} AS differences) d
WHERE d.differences <> '{{}}'::jsonb
