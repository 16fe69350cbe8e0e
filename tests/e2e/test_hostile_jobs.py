"""Hostile and broken input, jobs: raw INSERTs into resync.pgqueuer (random payload bytes, JSON
of every wrong shape, invalid UTF-8, unknown entrypoints) while a real daemon runs: each ends
failed with a readable error (or done, for a well-formed job on a UE that does not exist), the
daemon stays up, and a good job inserted with them is done promptly.

How many inputs of each kind were tried is written to the terminal at the end of the module."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from support import catalogue
from support.poll import wait_for
from support.processes import spawn_daemon
from tests.hostile import TRIED, fuzz
from tests.hostile import report_inputs_tried as report_inputs_tried  # autouse

pytestmark = pytest.mark.e2e

ENTRYPOINT = "resync_course_unit"


json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


wrong_ids = st.one_of(
    st.text(max_size=20).filter(lambda s: not s.isdigit()),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.integers(-(2**70), 0),
    st.integers(2**63, 2**70),
)


garbage_jobs = st.one_of(
    st.tuples(st.just("payload_random_bytes"), st.just(ENTRYPOINT), st.binary(max_size=200)),
    st.tuples(st.just("payload_null"), st.just(ENTRYPOINT), st.none()),
    st.tuples(
        st.just("payload_invalid_utf8"),
        st.just(ENTRYPOINT),
        st.sampled_from([b'\xff\xfe{"course_unit_id": 1}', b'{"course_unit_id": "\xc3\x28"}']),
    ),
    st.tuples(
        st.just("payload_json_not_object"),
        st.just(ENTRYPOINT),
        (json_junk.filter(lambda v: not isinstance(v, dict))).map(lambda v: json.dumps(v).encode()),
    ),
    st.tuples(
        st.just("payload_no_unit"),
        st.just(ENTRYPOINT),
        st.dictionaries(
            st.text(max_size=10).filter(lambda k: k != "course_unit_id"), json_junk, max_size=4
        ).map(lambda d: json.dumps(d).encode()),
    ),
    st.tuples(
        st.just("payload_wrong_unit_type"),
        st.just(ENTRYPOINT),
        wrong_ids.map(lambda v: json.dumps({"course_unit_id": v, "reason": "fuzz"}).encode()),
    ),
    st.tuples(
        st.just("payload_unknown_unit"),
        st.just(ENTRYPOINT),
        st.integers(10**9, 2**63 - 1).map(lambda v: json.dumps({"course_unit_id": v}).encode()),
    ),
    st.tuples(
        st.just("entrypoint_unknown"),
        st.text(min_size=1, max_size=60).filter(lambda e: e != ENTRYPOINT and "\x00" not in e),
        st.binary(max_size=50) | st.none(),
    ),
)


def test_garbage_jobs_fail_readably_while_good_jobs_run_promptly(
    conn: psycopg.Connection, dsn: str, tmp_path: Path
) -> None:
    log = tmp_path / "daemon.log"
    daemon = spawn_daemon(
        dsn, cwd=tmp_path, log=log, UE_RESYNC_SLEEP="0.2", UE_RESYNC_TIME_SCALE="0.01"
    )
    inserted: dict[int, str] = {}
    refused: Counter[str] = Counter()
    waits: list[float] = []
    try:
        wait_for(
            lambda: conn.execute(
                "SELECT count(*) FROM resync.workers WHERE stopped_at IS NULL"
            ).fetchone()[0],
            30,
            "the daemon to start",
        )

        @fuzz(60)
        @given(st.lists(garbage_jobs, min_size=1, max_size=6), st.integers(-(2**31), 2**31 - 1))
        def batch(jobs: list[tuple[str, str, bytes | None]], priority: int) -> None:
            # A good job on a drifted UE, queued with the garbage, must be done promptly.
            good = catalogue.unit(conn)
            catalogue.element(conn, good, credits=2)
            conn.execute("UPDATE course_units SET credits = 0 WHERE id = %s", (good,))
            with conn.transaction():
                for kind, entrypoint, payload in jobs:
                    TRIED[f"jobs.{kind}"] += 1
                    try:
                        with conn.transaction():
                            row = conn.execute(
                                "INSERT INTO resync.pgqueuer (priority, entrypoint, status, "
                                "payload, headers) VALUES (%s, %s, 'queued', %s, NULL) "
                                "RETURNING id",
                                (priority, entrypoint, payload),
                            ).fetchone()
                        if row is None:
                            # A well-formed job for a UE that has one queued: coalesced.
                            assert kind == "payload_unknown_unit", kind
                            continue
                        inserted[row[0]] = kind
                    except psycopg.Error as exc:
                        assert exc.sqlstate and exc.sqlstate[:2] in ("22", "23"), exc
                        refused[kind] += 1
                good_job = conn.execute(
                    "SELECT resync.request(%s, 'good_job')", (good,)
                ).fetchone()[0]
            queued_at = time.monotonic()
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM resync.job_runs WHERE job_id = %s "
                        "AND outcome = 'succeeded'",
                        (good_job,),
                    ).fetchone()[0]
                    or daemon.poll() is not None
                ),
                60,
                "the good job",
            )
            assert daemon.poll() is None, log.read_text()[-3000:]
            waits.append(time.monotonic() - queued_at)
            assert catalogue.totals(conn, good)[0] == 2
            # Run at once: its first attempt succeeded, the garbage beside it cost it nothing.
            assert conn.execute(
                "SELECT attempt, outcome FROM resync.job_runs WHERE job_id = %s", (good_job,)
            ).fetchall() == [(1, "succeeded")]

        batch()

        # Every garbage job ends: failed with a readable error, or (a well-formed job for a UE
        # that does not exist) done as missing_unit. Unknown entrypoints are failed by the
        # daemons' housekeeping, every 5 s.
        wait_for(
            lambda: (
                not conn.execute(
                    "SELECT count(*) FROM resync.pgqueuer WHERE id = ANY(%s) "
                    "AND status IN ('queued', 'picked')",
                    (list(inserted),),
                ).fetchone()[0]
            ),
            30,
            "every garbage job to end",
        )
        rows = conn.execute(
            "SELECT j.id, coalesce(q.status::text, 'gone'), r.outcome, r.error "
            "FROM unnest(%s::bigint[]) j(id) "
            "LEFT JOIN resync.pgqueuer q ON q.id = j.id "
            "LEFT JOIN LATERAL (SELECT outcome, error FROM resync.job_runs h "
            "  WHERE h.job_id = j.id ORDER BY h.id DESC LIMIT 1) r ON true",
            (list(inserted),),
        ).fetchall()
        outcomes = {r[0]: r[1:] for r in rows}
        ended: Counter[str] = Counter()
        for job, (status, outcome, error) in outcomes.items():
            kind = inserted[job]
            if kind == "payload_unknown_unit":
                assert (status, outcome) == ("gone", "missing_unit"), (job, kind, status, outcome)
                assert "does not exist" in error
            elif kind == "entrypoint_unknown":
                # The entrypoint is quoted, stripped of control characters (finding 4).
                assert (status, outcome) == ("failed", "invalid"), (job, kind, status, outcome)
                assert error.startswith("unknown entrypoint "), (job, error)
                assert "\n" not in error, (job, error)
            else:
                assert (status, outcome) == ("failed", "invalid"), (job, kind, status, outcome)
                assert error and "\n" not in error and len(error) < 600, (job, kind, error)
            ended[f"{status}/{outcome}"] += 1
        assert daemon.poll() is None, log.read_text()[-3000:]
        # Never thrown off its connection (a reconnect pauses every job).
        for bad in ("Traceback", "reconnect", "connection lost"):
            assert bad not in log.read_text(), log.read_text()[-3000:]
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(30)
        else:
            code = daemon.returncode
    assert code == 0, log.read_text()[-3000:]
    print(
        f"jobs: {len(inserted)} inserted ({dict(ended)}), refused at insert {dict(refused)}; "
        f"good jobs done in max {max(waits):.2f} s"
    )
