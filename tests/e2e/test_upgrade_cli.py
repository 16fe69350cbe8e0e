"""`ue-resync migrate` upgrades a database migrated before the baseline, and `ue-resync failed`
still lists the failed job it held (the schema comparison: integration/test_legacy_upgrade.py)."""

from __future__ import annotations

import json

import psycopg

from support import catalogue
from support.env import scrubbed_env
from tests import schema
from ue_resync import scripts


def test_migrate_upgrades_a_pre_baseline_database_and_failed_still_lists(cli, empty_dsn):
    schema.migrate_the_old_way(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        unit = catalogue.unit(conn)
        job = conn.execute(
            "SELECT job_id FROM resync.enqueue(array[%s::bigint], array['manual_trigger'], "
            "interval '0')",
            (unit,),
        ).fetchone()[0]
        conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (job,))
        conn.execute(
            "INSERT INTO resync.run_history (job_id, course_unit_id, attempt, outcome, error) "
            "VALUES (%s, %s, 1, 'failed', 'boom')",
            (job, unit),
        )
    env = scrubbed_env(empty_dsn)
    refused = cli("work", "--stop-when-empty", env=env)
    assert refused.returncode == 1 and "run `ue-resync migrate`" in refused.stderr

    upgraded = cli("migrate", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    steps = [m.name for m in scripts.available()[1:]]
    steps += [
        f"definitions/{name}" if name in scripts.DEFINITIONS else name
        for name in schema.DEFINITIONS_STEPS
    ]
    assert upgraded.stdout.splitlines() == [
        f"applied {len(steps)} step(s): {', '.join(steps)}",
        f"schema at version {scripts.code_schema_version()}",
    ]
    listed = cli("failed", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["job_id"], r["last_error"]) for r in rows] == [(job, "boom")]
