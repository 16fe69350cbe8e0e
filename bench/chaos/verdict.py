"""What a chaos run asserts once the chaos is over and the queue drained, each failure recorded
with the reporter's `fail`: no drift left (the poison UE aside), no job stuck, only the poison's
jobs failed, last_job_sync set and never behind, no UE resynced by two daemons at once, no job
lost. The figures found on the way go to the report (bench/chaos/report.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import psycopg

from bench.chaos import checks
from bench.chaos.dataset import Catalogue
from bench.chaos.drains import Ending
from bench.chaos.monitor import Reporter

MAX_DUE_WAIT = 60.0  # a due job waiting longer than this during the run is stuck


@dataclasses.dataclass
class Findings:
    figures: dict[str, Any]  # drift_at_end, failed_jobs, … and checks.figures
    lag: checks.Lag
    lost: int  # jobs lost: deferred changes never resynced, and sync_failures jobs likewise


def assertions(
    out: Reporter,
    connect: Callable[[], psycopg.Connection],
    cat: Catalogue,
    ending: Ending,
    max_due_wait: float,
) -> Findings:
    """Every assertion, on the database as the drains left it; `max_due_wait` is the longest a
    due job waited during the chaos."""
    figures: dict[str, Any] = {}
    with connect() as conn:
        figures["drift_at_end"] = _drift(out, conn, cat.poison)
        _stuck(out, conn, max_due_wait)
        figures["failed_jobs"] = _failed(out, conn, cat.poison)
        expected, behind = _last_job_sync(out, conn, cat, ending)
        figures["ues_with_deferred_jobs"] = expected
        figures["last_job_sync_behind"] = behind
        overlaps = checks.overlapping_resyncs(conn)
        if overlaps:
            out.fail("no UE resynced by two daemons at once", f"{overlaps[:5]}")
        lag, lost = _lost(out, conn, cat, ending)
        figures.update(checks.figures(conn))
    return Findings(figures, lag, lost)


def _drift(out: Reporter, conn: psycopg.Connection, poison: int) -> int:
    """resync.drift is empty but for the poison UE; how many others drifted."""
    drift = checks.drifted(conn)
    rest = [u for u in drift if u != poison]
    if rest:
        out.fail("resync.drift is empty (poison UE excepted)", f"drifted: {rest[:20]}")
    if poison not in drift:
        out.notes.append("the poison UE was not drifted at the end (unexpected)")
    return len(rest)


def _stuck(out: Reporter, conn: psycopg.Connection, max_due_wait: float) -> None:
    """No job due and queued, picked by no live worker or still running; none waited too long
    during the run."""
    q = checks.queue_state(conn)
    stuck_due = q["due"]
    stuck_picked = checks.one(
        conn,
        "SELECT count(*) FROM resync.pgqueuer q WHERE q.status = 'picked' AND NOT EXISTS "
        "(SELECT 1 FROM resync.workers w WHERE w.id = q.queue_manager_id "
        " AND w.stopped_at IS NULL AND w.heartbeat_at > now() - interval '30 seconds')",
    )
    running = checks.one(conn, "SELECT count(*) FROM resync.job_runs WHERE outcome = 'running'")
    if stuck_due or stuck_picked or running:
        out.fail(
            "no job stuck",
            f"{stuck_due} due and queued, {stuck_picked} picked without a live worker, "
            f"{running} run(s) still 'running'",
        )
    if max_due_wait > MAX_DUE_WAIT:
        out.fail(
            "no job stuck",
            f"a due job waited {max_due_wait:.1f} s during the run (> {MAX_DUE_WAIT:g} s)",
        )


def _failed(out: Reporter, conn: psycopg.Connection, poison: int) -> int:
    """Only the poison UE's jobs failed, and at least one did; how many."""
    failed = checks.failed_jobs(conn)
    wrong = [f for f in failed if f[1] != str(poison)]
    if wrong:
        out.fail("only the poison jobs fail", f"failed jobs on other UEs: {wrong[:20]}")
    elsewhere = checks.failed_runs_elsewhere(conn, poison)
    if elsewhere:
        out.fail("only the poison jobs fail", f"failed/invalid runs: {elsewhere[:10]}")
    if not failed:
        out.fail("only the poison jobs fail", "no poison job failed: the fault missed")
    return len(failed)


def _last_job_sync(
    out: Reporter, conn: psycopg.Connection, cat: Catalogue, ending: Ending
) -> tuple[int, int]:
    """last_job_sync on every UE that had a deferred job: set, by a job that ran after its first
    deferred change (the sweep counts as one for the UEs it queued), and no older than its last.
    How many UEs had a deferred job, and how many were left behind."""
    excluded = {cat.poison, *cat.auto_off}
    sweep_at = ending.sweep_at
    expected = {u: span for u, span in ending.changes.units_with(1).items() if u not in excluded}
    for u in ending.swept:
        if u not in excluded:
            first, last = expected.get(u, (sweep_at, sweep_at))
            expected[u] = (min(first, sweep_at), max(last, sweep_at))
    missing, behind = checks.last_job_sync_of(conn, expected)
    missing_sf = checks.sync_failure_last_job_missing(conn, cat.poison)
    if missing or missing_sf:
        out.fail(
            "last_job_sync set on every UE that had a deferred job",
            f"{len(missing)} UE(s) from the writers' records "
            f"(unit, last_job_sync, first deferred change): {missing[:10]}; "
            f"{len(missing_sf)} from resync.sync_failures: {missing_sf[:10]}",
        )
    if behind:
        # Since sync_units takes its timestamp under the locks and never moves it back
        # (finding 1 of docs/reliability.md), a resync that ran after the UE's last
        # deferred change leaves a last_job_sync no older than that change.
        out.fail(
            "last_job_sync is no older than the UE's last deferred change",
            f"{len(behind)} UE(s) (unit, seconds behind): "
            f"{[(u, round(b - s, 3)) for u, s, b in behind[:10]]}",
        )
    return len(expected), len(behind)


def _lost(
    out: Reporter, conn: psycopg.Connection, cat: Catalogue, ending: Ending
) -> tuple[checks.Lag, int]:
    """The lag from commit to consistent, and the jobs lost, which must be none."""
    runs = checks.runs_by_unit(conn)
    excluded = {cat.poison, *cat.auto_off}
    lag = checks.lag(ending.changes, runs, excluded, ending.sweep_at, ending.swept_end)
    lost_sf = checks.sync_failure_jobs_lost(conn, cat.poison, ending.sweep_at)
    if lag.lost or lost_sf:
        out.fail(
            "no job lost",
            f"{len(lag.lost)} deferred change(s) never followed by a resync of their UE "
            f"(unit, before-commit epoch): {lag.lost[:10]}; {lost_sf} "
            "resync.sync_failures job(s) likewise",
        )
    return lag, len(lag.lost) + lost_sf
