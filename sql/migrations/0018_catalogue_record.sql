-- 0018: the record of what ue-resync installed, as the catalogue showed it right after migrate
-- applied the definitions (sql/verify.sql, "objects"): what `ue-resync migrate --verify`, the
-- alert `catalogue` and migrate's repair compare the live catalogue with.

CREATE TABLE IF NOT EXISTS resync.schema_objects (
    kind    text NOT NULL,  -- function, view, trigger, table, owner, grant, role, …
    name    text NOT NULL,  -- the object as the catalogue names it (quoted where needed)
    detail  text NOT NULL,  -- md5 of its definition, its owner, the rights held, or 'present'
    PRIMARY KEY (kind, name)
);
