"""What a chaos run asserts at the end, and the figures it reports.

Timestamps: writers record `time.time()` around their COMMIT; the server's are read as epoch
seconds. The server is local (our own, or one reached over loopback), so both are one clock.

Lag from commit to consistent, per element change (one UE touched by one committed statement):
  - synced inline (its statement's sync succeeded): 0, consistent at commit;
  - deferred (the sync failed, or mode 'deferred'): consistent at the first of
      * the end of a succeeded daemon resync of that UE that started after the writer sent its
        COMMIT (job_runs.started_at ≥ b; the resync's transaction starts later still, so it
        reads the change), or
      * the COMMIT of a later writer transaction that synced that UE inline and began after
        this change's COMMIT returned (its sync reads every commit before it);
    lag = that moment − the moment COMMIT returned (0 when the daemon was quicker than the
    writer's return from COMMIT);
  - mode 'off': the same, but also repaired by the operator's sweep at the end; reported apart.

Jobs lost: a deferred change (queued by the trigger: inline failure or mode 'deferred') after
which no daemon resync of its UE started before the operator's sweep — its job vanished without
running. Also counted from the database side: a resync.sync_failures row with a job whose UE saw
no resync started after the failure. Both must be 0."""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import Counter, defaultdict
from typing import Any

import psycopg


@dataclasses.dataclass
class Changes:
    """The writers' records, indexed for the analysis."""

    committed: list[dict[str, Any]]
    ambiguous: list[dict[str, Any]]

    @classmethod
    def of(cls, records: list[dict[str, Any]]) -> Changes:
        return cls(
            [r for r in records if not r.get("a")],
            [r for r in records if r.get("a")],
        )

    def units_with(self, flag: int) -> dict[int, tuple[float, float]]:
        """UE → (first, last) `b` (before COMMIT) of its committed changes with this flag."""
        out: dict[int, tuple[float, float]] = {}
        for r in self.committed:
            for u, d, *_ in r["c"]:
                if d == flag:
                    first, last = out.get(u, (r["b"], r["b"]))
                    out[u] = (min(first, r["b"]), max(last, r["b"]))
        return out

    def explained_drift(self) -> set[int]:
        """UEs whose drift before the sweep is expected: an 'off' change, or a COMMIT whose
        outcome the writer could not know."""
        units = {u for r in self.committed for u, d, *_ in r["c"] if d == 2}
        units |= {u for r in self.ambiguous for u, *_ in r["c"]}
        return units

    def inline_syncs(self) -> dict[int, list[tuple[float, float]]]:
        """UE → sorted (transaction start, commit returned) of transactions that synced it."""
        out: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for r in self.committed:
            for u in {u for u, d, *_ in r["c"] if d == 0}:
                out[u].append((r["s"], r["t"]))
        for v in out.values():
            v.sort()
        return out


@dataclasses.dataclass
class Lag:
    inline: int = 0
    deferred: list[float] = dataclasses.field(default_factory=list)
    off: list[float] = dataclasses.field(default_factory=list)
    lost: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (unit, b)


def runs_by_unit(conn: psycopg.Connection) -> dict[int, list[tuple[float, float]]]:
    """UE → sorted (started_at, finished_at) of the daemon's successful resyncs, epoch s."""
    out: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for u, s, f in conn.execute(
        "SELECT course_unit_id, extract(epoch FROM started_at)::float8, "
        "extract(epoch FROM finished_at)::float8 FROM resync.job_runs "
        "WHERE outcome IN ('succeeded', 'missing_unit') AND course_unit_id IS NOT NULL "
        "ORDER BY course_unit_id, started_at"
    ):
        out[u].append((s, f))
    return out


def lag(
    changes: Changes,
    runs: dict[int, list[tuple[float, float]]],
    excluded: set[int],
    sweep_at: float,
    swept_at_end: float,
) -> Lag:
    out = Lag()
    inline = changes.inline_syncs()
    for r in changes.committed:
        for u, d, *_ in r["c"]:
            if u in excluded:
                continue
            if d == 0:
                out.inline += 1
                continue
            b, t = r["b"], r["t"]
            candidates = []
            unit_runs = runs.get(u, [])
            i = bisect.bisect_left(unit_runs, (b, -math.inf))
            ran = i < len(unit_runs) and unit_runs[i][0] < sweep_at
            if ran:
                candidates.append(unit_runs[i][1])
            syncs = inline.get(u, [])
            j = bisect.bisect_left(syncs, (t, -math.inf))
            if j < len(syncs):
                candidates.append(syncs[j][1])
            if d == 1 and not ran:
                out.lost.append((u, b))
            if d == 2 and not candidates:
                candidates.append(swept_at_end)
            if candidates:
                (out.deferred if d == 1 else out.off).append(max(0.0, min(candidates) - t))
    return out


# -- the database side --------------------------------------------------------------------------


def one(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def drifted(conn: psycopg.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT course_unit_id FROM resync.drift ORDER BY 1")]


def queue_state(conn: psycopg.Connection) -> dict[str, int]:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'queued'), "
        "count(*) FILTER (WHERE status = 'queued' AND execute_after <= now()), "
        "count(*) FILTER (WHERE status = 'picked'), "
        "count(*) FILTER (WHERE status = 'failed') FROM resync.pgqueuer"
    ).fetchone()
    assert row is not None
    return dict(zip(("queued", "due", "picked", "failed"), map(int, row), strict=True))


def overlapping_resyncs(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """Successful resyncs of a UE whose locked span [locked_at, finished_at] began before an
    earlier one of the same UE ended: two resyncs holding it at once. Each span lies inside the
    UE's row lock (both ends are clock_timestamp() under it), so any overlap is a violation,
    whether the two runs come from two daemons or from one. One pass per UE (a running
    maximum), not a pairwise join."""
    return conn.execute(
        """
        WITH spans AS (
            SELECT id, course_unit_id, worker_id, locked_at, finished_at,
                   max(finished_at) OVER w AS earlier_end
            FROM resync.job_runs
            WHERE outcome = 'succeeded' AND locked_at IS NOT NULL
            WINDOW w AS (PARTITION BY course_unit_id ORDER BY locked_at, id
                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        )
        SELECT course_unit_id, id, worker_id, locked_at, finished_at, earlier_end
        FROM spans
        WHERE locked_at < earlier_end
        ORDER BY course_unit_id, locked_at
        LIMIT 20
        """
    ).fetchall()


def failed_jobs(conn: psycopg.Connection) -> list[tuple[int, str | None, str]]:
    return conn.execute(
        "SELECT id, headers ->> 'course_unit_id', entrypoint FROM resync.pgqueuer "
        "WHERE status = 'failed' ORDER BY id"
    ).fetchall()


def failed_runs_elsewhere(conn: psycopg.Connection, poison: int) -> list[tuple[Any, ...]]:
    """Runs that ended failed or invalid on another UE than the poison one."""
    return conn.execute(
        "SELECT id, job_id, course_unit_id, outcome, error FROM resync.job_runs "
        "WHERE outcome IN ('failed', 'invalid') "
        "AND course_unit_id IS DISTINCT FROM %s ORDER BY id LIMIT 20",
        (poison,),
    ).fetchall()


def last_job_sync_of(
    conn: psycopg.Connection, expected: dict[int, tuple[float, float]]
) -> tuple[list[tuple[int, Any, float]], list[tuple[int, float, float]]]:
    """For the UEs of `expected` (UE → (first, last) deferred change, epoch): those whose
    last_job_sync is unset or older than their first deferred change (no job synced them since),
    and those whose last_job_sync is older than their last deferred change although a resync ran
    after it (the timestamp went backwards: finding 1 of docs/reliability.md)."""
    if not expected:
        return [], []
    rows = conn.execute(
        "SELECT id, extract(epoch FROM last_job_sync)::float8 FROM course_units WHERE id = ANY(%s)",
        (list(expected),),
    ).fetchall()
    missing = [(u, s, expected[u][0]) for u, s in rows if s is None or s < expected[u][0]]
    behind = [
        (u, s, expected[u][1])
        for u, s in rows
        if s is not None and expected[u][0] <= s < expected[u][1]
    ]
    return missing, behind


def sync_failure_jobs_lost(conn: psycopg.Connection, poison: int, sweep_at: float) -> int:
    return int(
        one(
            conn,
            """
            SELECT count(*) FROM resync.sync_failures f
            WHERE f.job_id IS NOT NULL AND f.course_unit_id <> %(poison)s
              AND NOT EXISTS (
                SELECT 1 FROM resync.job_runs r
                WHERE r.course_unit_id = f.course_unit_id
                  AND r.outcome IN ('succeeded', 'missing_unit')
                  AND r.started_at >= f.failed_at
                  AND r.started_at < to_timestamp(%(sweep)s))
            """,
            {"poison": poison, "sweep": sweep_at},
        )
    )


def sync_failure_last_job_missing(conn: psycopg.Connection, poison: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        """
        SELECT f.course_unit_id, max(f.failed_at), u.last_job_sync
        FROM resync.sync_failures f JOIN course_units u ON u.id = f.course_unit_id
        WHERE f.job_id IS NOT NULL AND f.course_unit_id <> %s
        GROUP BY f.course_unit_id, u.last_job_sync
        HAVING u.last_job_sync IS NULL OR u.last_job_sync < min(f.failed_at)
        ORDER BY 1 LIMIT 20
        """,
        (poison,),
    ).fetchall()


def figures(conn: psycopg.Connection) -> dict[str, Any]:
    outcomes = dict(
        conn.execute(
            "SELECT outcome, count(*) FROM resync.job_runs GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )
    failures = [
        (reason, state, n)
        for reason, state, n in conn.execute(
            "SELECT reason, sqlstate, count(*) FROM resync.sync_failures "
            "GROUP BY 1, 2 ORDER BY 3 DESC"
        ).fetchall()
    ]
    job_reasons = Counter(
        dict(
            conn.execute(
                "SELECT regexp_replace(reason, '_after_.*', '_after_*'), count(DISTINCT job_id) "
                "FROM resync.job_runs WHERE reason IS NOT NULL GROUP BY 1"
            ).fetchall()
        )
    )
    return {
        "runs_by_outcome": outcomes,
        "jobs_run": int(one(conn, "SELECT count(DISTINCT job_id) FROM resync.job_runs")),
        "sync_failures": failures,
        "jobs_by_reason": dict(job_reasons.most_common()),
        "workers_registered": int(one(conn, "SELECT count(*) FROM resync.workers")),
    }
