"""`ue-resync migrate` on a database that Laravel created first (its own column types, rows
already there): a missing counted column refused with nothing changed; otherwise nothing
rewritten, only last_job_sync added, and the triggers, the queue and the operator functions
working on Laravel's types."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from support import catalogue
from tests.schema import DEFINITIONS_STEPS, EVERYTHING, objects
from ue_resync import migrate

LARAVEL_SCHEMA = """
CREATE TABLE course_units (
    id                          serial PRIMARY KEY,
    code                        varchar(255) NOT NULL UNIQUE,
    name                        varchar(255) NOT NULL,
    description                 text,
    credits                     integer,
    hours_cm                    integer,
    hours_td                    integer,
    hours_tp                    integer,
    hours_total                 integer,
    elements_count              integer NOT NULL DEFAULT 0,
    hours_distribution          json,
    sync_credits_with_elements  boolean NOT NULL DEFAULT true,
    sync_hours_with_elements    boolean NOT NULL DEFAULT true,
    auto_sync_enabled           boolean NOT NULL DEFAULT true,
    last_element_sync           timestamp(0) without time zone,
    created_at                  timestamp(0) without time zone,
    updated_at                  timestamp(0) without time zone
);
CREATE TABLE course_unit_elements (
    id              serial PRIMARY KEY,
    course_unit_id  integer REFERENCES course_units (id) ON DELETE CASCADE,
    code            varchar(255) NOT NULL,
    name            varchar(255) NOT NULL,
    credits         integer NOT NULL DEFAULT 0,
    hours_cm        integer NOT NULL DEFAULT 0,
    hours_td        integer NOT NULL DEFAULT 0,
    hours_tp        integer NOT NULL DEFAULT 0,
    hours_total     integer NOT NULL DEFAULT 0,
    status          varchar(255) NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'inactive', 'archived')),
    deleted_at      timestamp(0) without time zone,
    created_at      timestamp(0) without time zone,
    updated_at      timestamp(0) without time zone
);
INSERT INTO course_units (code, name, credits, hours_cm, hours_td, hours_tp, hours_total,
                          hours_distribution, created_at)
VALUES ('INF101', 'Algorithms', 5, 20, 20, 10, 50, '{"cm":40,  "td":40, "tp":20}', '2023-09-01'),
       ('INF102', 'Databases', NULL, NULL, NULL, NULL, NULL, NULL, '2023-09-01'),
       ('INF103', 'Networks', 3, 10, 10, 10, 30, '{"cm": 33.33,"td":33.33,"tp":33.33}', NULL);
INSERT INTO course_unit_elements (course_unit_id, code, name, credits, hours_cm, hours_td,
                                  hours_tp, hours_total, status, deleted_at)
VALUES (1, 'INF101a', 'Sorting', 3, 12, 12, 6, 30, 'active', NULL),
       (1, 'INF101b', 'Graphs', 2, 8, 8, 4, 20, 'active', NULL),
       (2, 'INF102a', 'SQL', 4, 10, 10, 20, 40, 'active', NULL),
       (2, 'INF102b', 'NoSQL', 2, 5, 5, 5, 15, 'archived', NULL),
       (3, 'INF103a', 'TCP', 3, 10, 10, 10, 30, 'active', '2024-01-01');
"""

ORIGINAL_UNIT_COLUMNS = (
    "ctid, xmin::text, id, code, name, description, credits, hours_cm, hours_td, hours_tp, "
    "hours_total, elements_count, hours_distribution::text, sync_credits_with_elements, "
    "sync_hours_with_elements, auto_sync_enabled, last_element_sync, created_at, updated_at"
)
ORIGINAL_ELEMENT_COLUMNS = (
    "ctid, xmin::text, id, course_unit_id, code, name, credits, hours_cm, hours_td, hours_tp, "
    "hours_total, status, deleted_at, created_at, updated_at"
)


def _laravel_state(conn: psycopg.Connection) -> tuple[object, ...]:
    return (
        conn.execute(f"SELECT {ORIGINAL_UNIT_COLUMNS} FROM course_units ORDER BY id").fetchall(),
        conn.execute(
            f"SELECT {ORIGINAL_ELEMENT_COLUMNS} FROM course_unit_elements ORDER BY id"
        ).fetchall(),
        conn.execute(
            "SELECT relname, relfilenode FROM pg_class "
            "WHERE relname IN ('course_units', 'course_unit_elements') ORDER BY 1"
        ).fetchall(),
    )


def test_a_missing_counted_column_is_refused_and_nothing_changes(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(LARAVEL_SCHEMA)
        conn.execute("ALTER TABLE course_units DROP COLUMN elements_count")
        state = "SELECT ctid, xmin::text, * FROM course_units ORDER BY id"
        before = (conn.execute(state).fetchall(), objects(conn))
        with pytest.raises(migrate.MigrationError) as refused:
            migrate.apply(conn)
        assert "public.course_units.elements_count does not exist" in str(refused.value)
        assert "nothing was changed" in str(refused.value)
        assert (conn.execute(state).fetchall(), objects(conn)) == before
        assert conn.execute("SELECT to_regnamespace('resync')").fetchone() == (None,)


def test_laravel_database_migrates_without_rewriting_rows(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(LARAVEL_SCHEMA)
        before = _laravel_state(conn)

        # Its UEs hold values their first sync will change: a first install says so, and goes
        # ahead only when told to.
        with pytest.raises(migrate.MigrationError, match=r"3 course unit\(s\) would change"):
            migrate.apply(conn)
        assert _laravel_state(conn) == before
        outcome = migrate.run(conn, accept_resync=True)
        assert [s.name for s in outcome.scripts] == [
            *EVERYTHING[: -len(DEFINITIONS_STEPS)],
            "public.course_units.last_job_sync",
            *DEFINITIONS_STEPS,
        ]
        assert outcome.queued == 3

        # Same rows, same physical tuples (ctid, xmin), same files: nothing rewritten.
        assert _laravel_state(conn) == before
        # Types chosen by Laravel are kept; last_job_sync, which it lacked, was added.
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'course_units'"
            ).fetchall()
        )
        assert types["id"] == "integer"
        assert types["credits"] == "integer"
        assert types["hours_distribution"] == "json"
        assert types["last_job_sync"] == "timestamp with time zone"
        assert conn.execute(
            "SELECT bool_and(last_job_sync IS NULL) FROM course_units"
        ).fetchone() == (True,)


def test_triggers_work_on_laravel_column_types(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(LARAVEL_SCHEMA)
        migrate.apply(conn, accept_resync=True)
        conn.execute("DELETE FROM resync.pgqueuer")  # the first resyncs it queued

        # Every unit drifts: its stored values predate the sync (NULLs, no elements_count).
        assert conn.execute(
            "SELECT array_agg(course_unit_id ORDER BY 1) FROM resync.drift"
        ).fetchone()[0] == [1, 2, 3]

        conn.execute("UPDATE course_unit_elements SET hours_cm = 14 WHERE code = 'INF101a'")
        conn.execute("UPDATE course_unit_elements SET status = 'inactive' WHERE code = 'INF102a'")
        conn.execute(
            "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, hours_cm, "
            "hours_td, hours_tp, hours_total) VALUES (3, 'INF103b', 'UDP', 2, 6, 2, 2, 10)"
        )

        assert conn.execute("SELECT count(*) FROM resync.sync_failures").fetchone()[0] == 0
        assert catalogue.jobs(conn) == []
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT id, credits, hours_cm, hours_td, hours_tp, hours_total, "
                "       elements_count, hours_distribution::text AS dist, "
                "       last_element_sync IS NOT NULL AS synced "
                "FROM course_units ORDER BY id"
            ).fetchall()
        assert rows == [
            {
                "id": 1,
                "credits": 5,
                "hours_cm": 22,
                "hours_td": 20,
                "hours_tp": 10,
                "hours_total": 50,
                "elements_count": 2,
                "dist": '{"cm": 44.0, "td": 40.0, "tp": 20.0}',
                "synced": True,
            },
            {
                "id": 2,
                "credits": 0,
                "hours_cm": 0,
                "hours_td": 0,
                "hours_tp": 0,
                "hours_total": 0,
                "elements_count": 0,
                "dist": '{"cm": 0, "td": 0, "tp": 0}',
                "synced": True,
            },
            {
                "id": 3,
                "credits": 2,
                "hours_cm": 6,
                "hours_td": 2,
                "hours_tp": 2,
                "hours_total": 10,
                "elements_count": 1,
                "dist": '{"cm": 60.0, "td": 20.0, "tp": 20.0}',
                "synced": True,
            },
        ]
        assert catalogue.drift_count(conn) == 0

        # The operator functions too.
        conn.execute("UPDATE course_units SET credits = 9 WHERE id = 1")
        assert conn.execute("SELECT resync.sync_now(1)").fetchone()[0] == {
            "course_unit_id": 1,
            "code": "INF101",
            "changes": {"credits": [9, 5]},
        }
        conn.execute("UPDATE course_units SET credits = 9 WHERE id = 2")
        assert conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0] == 1
        assert [j["headers"]["course_unit_id"] for j in catalogue.jobs(conn)] == ["2"]
        assert conn.execute("SELECT resync.request(3)").fetchone()[0] is not None
