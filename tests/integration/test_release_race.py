"""Two daemons handing back their held jobs at once (both reconnecting after a failover): each
held a picked job for the same UE; the first puts its job back in the queue, the second must
fold into it, not break the one-queued-job-per-UE index."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg

from support import catalogue
from tests.deferral import wait_until_blocked


def picked(conn: psycopg.Connection, unit: int, worker: uuid.UUID) -> int:
    return conn.execute(
        "INSERT INTO resync.pgqueuer (priority, entrypoint, status, payload, headers, "
        "resync_unit, queue_manager_id) "
        "VALUES (0, 'resync_course_unit', 'picked', %s, %s, %s, %s) RETURNING id",
        (
            json.dumps({"course_unit_id": unit, "reason": "test"}).encode(),
            json.dumps({"course_unit_id": str(unit), "reason": "test"}),
            unit,
            worker,
        ),
    ).fetchone()[0]


def test_two_workers_releasing_jobs_of_one_unit_at_once_leave_one_queued(conn, dsn):
    u = catalogue.unit(conn)
    first, second = uuid.uuid4(), uuid.uuid4()
    picked(conn, u, first)
    picked(conn, u, second)
    results: list[object] = []
    with psycopg.connect(dsn) as a, psycopg.connect(dsn, autocommit=True) as b:
        assert a.execute("SELECT resync.release_jobs(%s)", (first,)).fetchone()[0] == 1
        b_pid = b.info.backend_pid

        def release_second() -> None:
            try:
                results.append(b.execute("SELECT resync.release_jobs(%s)", (second,)).fetchone())
            except psycopg.Error as exc:
                results.append(exc)

        thread = threading.Thread(target=release_second)
        thread.start()
        # The second release waits on the first one's queued index entry.
        wait_until_blocked(conn, b_pid, "the second release to wait for the first")
        a.commit()
        thread.join(10)
    assert results == [(1,)]
    assert [j["status"] for j in catalogue.jobs(conn, u)] == ["queued"]
