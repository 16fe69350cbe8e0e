"""The executor's `Store`, in SQL: the resync of a batch of UEs by the daemon, and the record of
each attempt; SQL in, results out.

Each attempt is recorded in `resync.job_runs`: opened (and committed) before the resync, so a
daemon that dies mid-resync leaves a 'running' row the next daemon counts; closed in the resync's
own transaction on success, or in a transaction of its own after a failure."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ue_resync.queries import query


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    job_id: int
    course_unit_id: int
    reason: str
    run_id: int
    attempt: int


@dataclasses.dataclass(frozen=True, slots=True)
class Synced:
    run_id: int
    course_unit_id: int
    code: str | None
    outcome: str  # succeeded | missing_unit
    changes: dict[str, Any]
    seconds: float
    warnings: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    run_id: int
    outcome: str  # retrying | failed | superseded | invalid
    error: str
    sqlstate: str | None


async def start_runs(
    conn: psycopg.AsyncConnection, jobs: Sequence[tuple[int, int, str]], worker: uuid.UUID
) -> list[Run]:
    """Open a run per (job_id, course_unit_id, reason); crashed earlier runs count as attempts."""
    by_job = {job_id: (unit, reason) for job_id, unit, reason in jobs}
    async with conn.cursor() as cur:
        await cur.execute(
            query("start_runs"),
            {
                "job_ids": list(by_job),
                "units": [unit for unit, _ in by_job.values()],
                "reasons": [reason for _, reason in by_job.values()],
                "worker": worker,
            },
        )
        rows = await cur.fetchall()
    return [
        Run(job, by_job[job][0], by_job[job][1], run_id, attempt) for job, run_id, attempt in rows
    ]


async def resync_units(
    conn: psycopg.AsyncConnection, runs: Sequence[Run], timeout: float
) -> list[Synced]:
    """One transaction: lock and resync the runs' UEs in id order, close the runs, read the LMD
    warnings. Raises the psycopg error when anything fails (nothing is then written)."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("set_timeouts"), {"timeout": f"{int(timeout * 1000)}ms"})
        await cur.execute(
            query("complete_runs"),
            {"run_ids": [r.run_id for r in runs], "units": [r.course_unit_id for r in runs]},
        )
        done = await cur.fetchall()
        await cur.execute(query("note_warnings"), {"units": [r.course_unit_id for r in runs]})
        warnings: dict[int, list[tuple[str, str]]] = {}
        for row in await cur.fetchall():
            warnings.setdefault(row["course_unit_id"], []).append((row["warning"], row["detail"]))
    return [
        Synced(
            run_id=row["run_id"],
            course_unit_id=row["course_unit_id"],
            code=row["code"],
            outcome=row["outcome"],
            changes=row["changes"] or {},
            seconds=row["seconds"],
            warnings=tuple(warnings.get(row["course_unit_id"], ())),
        )
        for row in done
    ]


async def fail_runs(conn: psycopg.AsyncConnection, failures: Sequence[Failure]) -> None:
    if not failures:
        return
    await conn.execute(
        query("fail_runs"),
        {
            "run_ids": [f.run_id for f in failures],
            "outcomes": [f.outcome for f in failures],
            "errors": [f.error for f in failures],
            "sqlstates": [f.sqlstate for f in failures],
        },
    )


async def record_invalid(
    conn: psycopg.AsyncConnection, job_id: int, attempt: int, worker: uuid.UUID, error: str
) -> None:
    await conn.execute(
        query("invalid_run"),
        {"job_id": job_id, "attempt": attempt, "worker": worker, "error": error[:4000]},
    )
