-- 0019: a request's reason may be any text of 1 to 100 characters without control characters
-- (an operator writes "l'import du 12/09"); and the LMD warnings last noted per UE, so that the
-- daemon logs a warning when it appears or changes, not at every resync.

-- Section: reasons

ALTER TABLE resync.requests DROP CONSTRAINT IF EXISTS requests_reason_sane;
ALTER TABLE resync.requests ADD CONSTRAINT requests_reason_sane
    CHECK (length(reason) BETWEEN 1 AND 100 AND reason !~ '[[:cntrl:]]');

-- Section: the LMD warnings noted

-- One row per UE and warning the daemon last logged (resync.note_warnings): a row goes when the
-- warning clears.
CREATE TABLE IF NOT EXISTS resync.unit_warnings (
    course_unit_id  bigint      NOT NULL,
    warning         text        NOT NULL,
    detail          text        NOT NULL,
    noted_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (course_unit_id, warning)
);
