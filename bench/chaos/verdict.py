"""What a chaos run concludes once the chaos is over: its assertions (each failure recorded with
`run.fail`) and its report, printed and written as JSON (bench/results/chaos.json by default)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import common
from bench.chaos import checks
from bench.chaos.faults import Faults
from support.env import ROOT

if TYPE_CHECKING:
    from bench.chaos.run import ChaosRun

MAX_DUE_WAIT = 60.0  # a due job waiting longer than this during the run is stuck


def assertions(run: ChaosRun, faults: Faults, chaos_s: float) -> None:
    excluded = {run.cat.poison, *run.cat.auto_off}
    with run.connect() as conn:
        drift = checks.drifted(conn)
        rest = [u for u in drift if u != run.cat.poison]
        if rest:
            run.fail("resync.drift is empty (poison UE excepted)", f"drifted: {rest[:20]}")
        if run.cat.poison not in drift:
            run.notes.append("the poison UE was not drifted at the end (unexpected)")
        run.figures["drift_at_end"] = len(rest)

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
            run.fail(
                "no job stuck",
                f"{stuck_due} due and queued, {stuck_picked} picked without a live worker, "
                f"{running} run(s) still 'running'",
            )
        if run.max_due_wait > MAX_DUE_WAIT:
            run.fail(
                "no job stuck",
                f"a due job waited {run.max_due_wait:.1f} s during the run (> {MAX_DUE_WAIT:g} s)",
            )

        failed = checks.failed_jobs(conn)
        wrong = [f for f in failed if f[1] != str(run.cat.poison)]
        if wrong:
            run.fail("only the poison jobs fail", f"failed jobs on other UEs: {wrong[:20]}")
        elsewhere = checks.failed_runs_elsewhere(conn, run.cat.poison)
        if elsewhere:
            run.fail("only the poison jobs fail", f"failed/invalid runs: {elsewhere[:10]}")
        if not failed:
            run.fail("only the poison jobs fail", "no poison job failed: the fault missed")
        run.figures["failed_jobs"] = len(failed)

        # last_job_sync on every UE that had a deferred job: set, by a job that ran after
        # its first deferred change (the sweep counts as one for the UEs it queued).
        expected = {u: span for u, span in run.changes.units_with(1).items() if u not in excluded}
        for u in run.swept:
            if u not in excluded:
                first, last = expected.get(u, (run.sweep_at, run.sweep_at))
                expected[u] = (min(first, run.sweep_at), max(last, run.sweep_at))
        missing, behind = checks.last_job_sync_of(conn, expected)
        missing_sf = checks.sync_failure_last_job_missing(conn, run.cat.poison)
        if missing or missing_sf:
            run.fail(
                "last_job_sync set on every UE that had a deferred job",
                f"{len(missing)} UE(s) from the writers' records "
                f"(unit, last_job_sync, first deferred change): {missing[:10]}; "
                f"{len(missing_sf)} from resync.sync_failures: {missing_sf[:10]}",
            )
        if behind:
            # Since sync_units takes its timestamp under the locks and never moves it back
            # (finding 1 of docs/reliability.md), a resync that ran after the UE's last
            # deferred change leaves a last_job_sync no older than that change.
            run.fail(
                "last_job_sync is no older than the UE's last deferred change",
                f"{len(behind)} UE(s) (unit, seconds behind): "
                f"{[(u, round(b - s, 3)) for u, s, b in behind[:10]]}",
            )
        run.figures["ues_with_deferred_jobs"] = len(expected)
        run.figures["last_job_sync_behind"] = len(behind)

        overlaps = checks.overlapping_resyncs(conn)
        if overlaps:
            run.fail("no UE resynced by two daemons at once", f"{overlaps[:5]}")

        # lag and lost jobs
        runs = checks.runs_by_unit(conn)
        lag = checks.lag(run.changes, runs, excluded, run.sweep_at, run.swept_end)
        lost_sf = checks.sync_failure_jobs_lost(conn, run.cat.poison, run.sweep_at)
        if lag.lost or lost_sf:
            run.fail(
                "no job lost",
                f"{len(lag.lost)} deferred change(s) never followed by a resync of their UE "
                f"(unit, before-commit epoch): {lag.lost[:10]}; {lost_sf} "
                "resync.sync_failures job(s) likewise",
            )
        run.lag = lag
        run.lost = len(lag.lost) + lost_sf
        run.figures.update(checks.figures(conn))


def daemon_log_counts(run: ChaosRun) -> Counter[str]:
    counts: Counter[str] = Counter()
    for d in run.daemons:
        for path in d.logs:
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                for key, marker in (
                    ("reconnected", "reconnected to the database"),
                    ("connection lost", "database connection lost"),
                    ("worker error", "worker error"),
                    ("traceback", "Traceback"),
                    ("resync failed (retry)", "resync failed (attempt"),
                    ("failed for good", "resync failed for good"),
                    ("died on every attempt", "died on every attempt"),
                ):
                    if marker in line:
                        counts[key] += 1
    return counts


def report(run: ChaosRun, faults: Faults, chaos_s: float) -> None:
    f = run.figures
    wc = run.writer_counts
    logs = daemon_log_counts(run)
    lag = run.lag
    deferred_mode = sum(
        1 for r in run.changes.committed for c in r["c"] if c[1] == 1 and r["m"] == "deferred"
    )
    off_changes = sum(1 for r in run.changes.committed for c in r["c"] if c[1] == 2)
    all_lags = lag.deferred + [0.0] * lag.inline
    outcomes = f["runs_by_outcome"]
    ops = {k[3:]: v for k, v in sorted(wc.items()) if k.startswith("op_")}
    aborted = {k[8:]: v for k, v in sorted(wc.items()) if k.startswith("aborted_")}
    fault_counts = {k: faults.counts[k] for k in (*faults.kinds, "sigkill_mid_job", "sigkill_idle")}
    if faults.counts.get("pg_terminate_backend"):
        fault_counts["pg_restart (as pg_terminate_backend)"] = faults.counts["pg_terminate_backend"]
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(run.args).items()
            if k not in ("results",)
        },
        "server": {"kind": run.server.kind, "restartable": run.server.can_restart},
        "duration_s": round(chaos_s, 1),
        "element_statements_committed": wc["statements"],
        "element_rows_committed": wc["rows"],
        "writer_transactions": wc["transactions"],
        "writer_transactions_by_mode": {m: wc[f"mode_{m}"] for m in ("inline", "deferred", "off")},
        "writer_statements_by_op": ops,
        "writer_transactions_aborted_by_sqlstate": aborted,
        "writer_reconnects": wc["connection_lost"],
        "writer_crashes": [
            f"writer {w.index} ({w.kind}) {c}" for w in run.writers for c in w.crashes
        ],
        "commits_with_unknown_outcome": len(run.changes.ambiguous),
        "inline_deferrals_by_reason": [list(x) for x in f["sync_failures"]],
        "deferred_mode_changes": deferred_mode,
        "off_mode_changes": off_changes,
        "jobs_run": f["jobs_run"],
        "runs_by_outcome": outcomes,
        "jobs_by_reason": f["jobs_by_reason"],
        "retries": outcomes.get("retrying", 0),
        "faults": fault_counts,
        "fault_log": [[round(e.at, 1), e.kind, e.detail] for e in faults.events],
        "failovers": [
            {k: round(v, 2) for k, v in x.items()} for x in getattr(run.server, "failovers", [])
        ],
        "reconnects": logs["reconnected"],
        "daemon_log": dict(logs),
        "lag_deferred_s": _stats(lag.deferred),
        "lag_all_s": _stats(all_lags),
        "lag_off_s": _stats(lag.off),
        "changes_synced_inline": lag.inline,
        "max_due_wait_s": round(run.max_due_wait, 2),
        "max_picked_heartbeat_age_s": round(run.max_picked_age, 2),
        "max_queued_jobs": run.max_queued,
        "elements_min_max": list(run.elements_seen),
        "swept_by_operator": len(run.swept),
        "ues_with_deferred_jobs": f["ues_with_deferred_jobs"],
        "last_job_sync_behind": f["last_job_sync_behind"],
        "drift_at_end": f["drift_at_end"],
        "jobs_lost": run.lost,
        "failed_jobs_poison": f["failed_jobs"],
        "drain_seconds": f["drain_seconds"],
        "failures": run.failures,
        "notes": run.notes,
    }
    out = run.args.results or (ROOT / "bench" / "results" / "chaos.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    def ms(s: dict[str, Any]) -> str:
        if not s["n"]:
            return "-"
        return (
            f"max {s['max'] * 1000:,.0f} ms, p99 {s['p99'] * 1000:,.0f} ms, "
            f"p50 {s['p50'] * 1000:,.0f} ms (n={s['n']:,})"
        )

    lines = [
        "",
        "== chaos run figures",
        f"duration of chaos              {chaos_s:,.1f} s ({run.server.kind} server"
        + ("" if run.server.can_restart else ", restart simulated by pg_terminate_backend")
        + ")",
        f"element operations committed   {wc['statements']:,} statements, {wc['rows']:,} rows, "
        f"in {wc['transactions']:,} transactions "
        f"(inline {wc['mode_inline']:,}, deferred {wc['mode_deferred']:,}, "
        f"off {wc['mode_off']:,})",
        "  by operation                 " + ", ".join(f"{k} {v:,}" for k, v in ops.items()),
        "  writer transactions aborted  "
        + (", ".join(f"{k} {v:,}" for k, v in aborted.items()) or "none")
        + f"; commits of unknown outcome {len(run.changes.ambiguous)}",
        "deferrals by reason            "
        + ", ".join(f"{r} [{s}] {n:,}" for r, s, n in f["sync_failures"])
        + f"; mode deferred: {deferred_mode:,} UE changes; mode off: {off_changes:,}",
        f"jobs run                       {f['jobs_run']:,} jobs, "
        + ", ".join(f"{k} {v:,}" for k, v in outcomes.items())
        + " runs",
        "  jobs by reason               "
        + ", ".join(f"{k} {v:,}" for k, v in f["jobs_by_reason"].items()),
        f"retries                        {outcomes.get('retrying', 0):,}",
        "faults injected                "
        + ", ".join(f"{k} {v}" for k, v in fault_counts.items() if v),
        *(
            [
                "failovers                      "
                + "; ".join(
                    f"promoted after {x['outage_to_promotion_s']:.1f} s, daemons back "
                    f"{x['promotion_to_daemons_back_s']:.1f} s later"
                    for x in run.server.failovers
                )
            ]
            if getattr(run.server, "failovers", None)
            else []
        ),
        f"reconnects                     {logs['reconnected']} (daemon logs: "
        f"{logs['connection lost']} connection losses); writers reconnected "
        f"{wc['connection_lost']} times",
        *(
            [f"writer crashes                 {len(crashes)}, each started again (logs above)"]
            if (crashes := [c for w in run.writers for c in w.crashes])
            else []
        ),
        f"lag commit → consistent        deferred changes: {ms(_stats(lag.deferred))}",
        f"                               all changes: {ms(_stats(all_lags))} "
        f"({lag.inline:,} synced inline at commit)",
        f"                               'off' changes: {ms(_stats(lag.off))} "
        "(until a later sync or the operator's sweep)",
        f"catalogue                      {len(run.cat.units)} UEs, "
        f"{run.elements_seen[0]:,}–{run.elements_seen[1]:,} ECUE during the run",
        f"longest wait of a due job      {run.max_due_wait:.1f} s; oldest picked heartbeat "
        f"{run.max_picked_age:.1f} s; most jobs queued {run.max_queued:,}",
        f"operator's sweep               {len(run.swept)} UE(s) drifted by 'off' changes, "
        "queued by resync.enqueue_drifted()",
        f"last_job_sync                  set, no older than the last deferred change, on "
        f"{f['ues_with_deferred_jobs'] - f['last_job_sync_behind']} of the "
        f"{f['ues_with_deferred_jobs']} UEs that had a deferred job",
        f"failed jobs                    {f['failed_jobs']} (all on the poison UE "
        f"{run.cat.poison}, which stays drifted: excluded from the drift check)",
        f"drift at end                   {f['drift_at_end']} (must be 0)",
        f"jobs lost                      {run.lost} (must be 0)",
        f"figures: {out}",
    ]
    for note in run.notes:
        lines.append(f"note: {note}")
    if run.failures:
        lines.append(f"RESULT: FAILED ({len(run.failures)} assertion(s))")
        for failure in run.failures:
            lines.append(f"  - {failure.splitlines()[0]}")
    else:
        lines.append("RESULT: OK, every assertion holds")
    run.say("\n".join(lines))


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "max": None, "p99": None, "p50": None}
    return {
        "n": len(values),
        "max": round(max(values), 4),
        "p99": round(common.quantile(values, 0.99), 4),
        "p50": round(common.quantile(values, 0.5), 4),
    }
