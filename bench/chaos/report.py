"""The report of a chaos run, once its verdict is in: every figure as JSON
(bench/results/chaos.json by default), then printed, with the failures and the result."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

from bench.chaos.drains import Ending
from bench.chaos.faults import Faults
from bench.chaos.monitor import Monitor, Reporter
from bench.chaos.verdict import Findings
from bench.figures import quantile

# What the daemons' logs are searched for: the count it is reported under, and the text.
LOG_MARKERS = (
    ("reconnected", "reconnected to the database"),
    ("connection lost", "database connection lost"),
    ("worker error", "worker error"),
    ("traceback", "Traceback"),
    ("resync failed (retry)", "resync failed (attempt"),
    ("failed for good", "resync failed for good"),
    ("died on every attempt", "died on every attempt"),
)


@dataclasses.dataclass
class Facts:
    """What the report is made of, handed over by the run once it is over."""

    args: dict[str, Any]  # the command line, as parsed
    results: Path  # where the JSON goes
    server_kind: str
    restartable: bool
    failovers: list[dict[str, float]]
    chaos_s: float
    units: int  # UEs in the catalogue, poison included
    poison: int
    faults: Faults
    monitor: Monitor
    ending: Ending
    findings: Findings
    daemon_logs: list[Path]  # every start's log of every daemon


def report(out: Reporter, facts: Facts) -> None:
    facts.results.parent.mkdir(parents=True, exist_ok=True)
    facts.results.write_text(json.dumps(figures(out, facts), indent=2, default=str) + "\n")
    lines = ["", "== chaos run figures", *printed(facts), f"figures: {facts.results}"]
    lines += [f"note: {note}" for note in out.notes]
    if out.failures:
        lines.append(f"RESULT: FAILED ({len(out.failures)} assertion(s))")
        lines += [f"  - {failure.splitlines()[0]}" for failure in out.failures]
    else:
        lines.append("RESULT: OK, every assertion holds")
    out.say("\n".join(lines))


# -- the figures, as written to JSON --


def figures(out: Reporter, facts: Facts) -> dict[str, Any]:
    f, wc, lag = facts.findings.figures, facts.ending.writer_counts, facts.findings.lag
    outcomes, mon = f["runs_by_outcome"], facts.monitor
    logs = daemon_log_counts(facts.daemon_logs)
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in facts.args.items()
            if k not in ("results",)
        },
        "server": {"kind": facts.server_kind, "restartable": facts.restartable},
        "duration_s": round(facts.chaos_s, 1),
        "element_statements_committed": wc["statements"],
        "element_rows_committed": wc["rows"],
        "writer_transactions": wc["transactions"],
        "writer_transactions_by_mode": {m: wc[f"mode_{m}"] for m in ("inline", "deferred", "off")},
        "writer_statements_by_op": _prefixed(wc, "op_"),
        "writer_transactions_aborted_by_sqlstate": _prefixed(wc, "aborted_"),
        "writer_reconnects": wc["connection_lost"],
        "writer_crashes": mon.crashes,
        "commits_with_unknown_outcome": len(facts.ending.changes.ambiguous),
        "inline_deferrals_by_reason": [list(x) for x in f["sync_failures"]],
        "deferred_mode_changes": _changes(facts, 1, "deferred"),
        "off_mode_changes": _changes(facts, 2),
        "jobs_run": f["jobs_run"],
        "runs_by_outcome": outcomes,
        "jobs_by_reason": f["jobs_by_reason"],
        "retries": outcomes.get("retrying", 0),
        "faults": _fault_counts(facts.faults),
        "fault_log": [[round(e.at, 1), e.kind, e.detail] for e in facts.faults.events],
        "failovers": [{k: round(v, 2) for k, v in x.items()} for x in facts.failovers],
        "reconnects": logs["reconnected"],
        "daemon_log": dict(logs),
        "lag_deferred_s": stats(lag.deferred),
        "lag_all_s": stats(lag.deferred + [0.0] * lag.inline),
        "lag_off_s": stats(lag.off),
        "changes_synced_inline": lag.inline,
        "max_due_wait_s": round(mon.max_due_wait, 2),
        "max_picked_heartbeat_age_s": round(mon.max_picked_age, 2),
        "max_queued_jobs": mon.max_queued,
        "elements_min_max": list(mon.elements_seen),
        "swept_by_operator": len(facts.ending.swept),
        "ues_with_deferred_jobs": f["ues_with_deferred_jobs"],
        "last_job_sync_behind": f["last_job_sync_behind"],
        "drift_at_end": f["drift_at_end"],
        "jobs_lost": facts.findings.lost,
        "failed_jobs_poison": f["failed_jobs"],
        "drain_seconds": facts.ending.drain_seconds,
        "failures": out.failures,
        "notes": out.notes,
    }


def daemon_log_counts(logs: list[Path]) -> Counter[str]:
    """How many lines of the daemons' logs carry each of LOG_MARKERS."""
    counts: Counter[str] = Counter()
    for path in logs:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            for key, marker in LOG_MARKERS:
                if marker in line:
                    counts[key] += 1
    return counts


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "max": None, "p99": None, "p50": None}
    return {
        "n": len(values),
        "max": round(max(values), 4),
        "p99": round(quantile(values, 0.99), 4),
        "p50": round(quantile(values, 0.5), 4),
    }


def _prefixed(counts: Counter[str], prefix: str) -> dict[str, int]:
    """The writers' counts whose key starts with `prefix`, by the rest of their key."""
    return {k[len(prefix) :]: v for k, v in sorted(counts.items()) if k.startswith(prefix)}


def _changes(facts: Facts, flag: int, mode: str | None = None) -> int:
    """The writers' committed UE changes with `flag` (1 deferred, 2 off), in transactions of
    `mode` when given."""
    return sum(
        1
        for r in facts.ending.changes.committed
        for c in r["c"]
        if c[1] == flag and (mode is None or r["m"] == mode)
    )


def _fault_counts(faults: Faults) -> dict[str, int]:
    counts = {k: faults.counts[k] for k in (*faults.kinds, "sigkill_mid_job", "sigkill_idle")}
    if faults.counts.get("pg_terminate_backend"):
        counts["pg_restart (as pg_terminate_backend)"] = faults.counts["pg_terminate_backend"]
    return counts


# -- the figures, as printed --


def printed(facts: Facts) -> list[str]:
    return [*_writes(facts), *_jobs(facts), *_lags(facts), *_end(facts)]


def _writes(facts: Facts) -> list[str]:
    wc, changes = facts.ending.writer_counts, facts.ending.changes
    f = facts.findings.figures
    ops, aborted = _prefixed(wc, "op_"), _prefixed(wc, "aborted_")
    return [
        f"duration of chaos              {facts.chaos_s:,.1f} s ({facts.server_kind} server"
        + ("" if facts.restartable else ", restart simulated by pg_terminate_backend")
        + ")",
        f"element operations committed   {wc['statements']:,} statements, {wc['rows']:,} rows, "
        f"in {wc['transactions']:,} transactions "
        f"(inline {wc['mode_inline']:,}, deferred {wc['mode_deferred']:,}, "
        f"off {wc['mode_off']:,})",
        "  by operation                 " + ", ".join(f"{k} {v:,}" for k, v in ops.items()),
        "  writer transactions aborted  "
        + (", ".join(f"{k} {v:,}" for k, v in aborted.items()) or "none")
        + f"; commits of unknown outcome {len(changes.ambiguous)}",
        "deferrals by reason            "
        + ", ".join(f"{r} [{s}] {n:,}" for r, s, n in f["sync_failures"])
        + f"; mode deferred: {_changes(facts, 1, 'deferred'):,} UE changes; "
        f"mode off: {_changes(facts, 2):,}",
    ]


def _jobs(facts: Facts) -> list[str]:
    f, outcomes = facts.findings.figures, facts.findings.figures["runs_by_outcome"]
    logs, wc = daemon_log_counts(facts.daemon_logs), facts.ending.writer_counts
    lines = [
        f"jobs run                       {f['jobs_run']:,} jobs, "
        + ", ".join(f"{k} {v:,}" for k, v in outcomes.items())
        + " runs",
        "  jobs by reason               "
        + ", ".join(f"{k} {v:,}" for k, v in f["jobs_by_reason"].items()),
        f"retries                        {outcomes.get('retrying', 0):,}",
        "faults injected                "
        + ", ".join(f"{k} {v}" for k, v in _fault_counts(facts.faults).items() if v),
    ]
    if facts.failovers:
        lines.append(
            "failovers                      "
            + "; ".join(
                f"promoted after {x['outage_to_promotion_s']:.1f} s, daemons back "
                f"{x['promotion_to_daemons_back_s']:.1f} s later"
                for x in facts.failovers
            )
        )
    lines.append(
        f"reconnects                     {logs['reconnected']} (daemon logs: "
        f"{logs['connection lost']} connection losses); writers reconnected "
        f"{wc['connection_lost']} times"
    )
    if facts.monitor.crashes:
        lines.append(
            f"writer crashes                 {len(facts.monitor.crashes)}, "
            "each started again (logs above)"
        )
    return lines


def _lags(facts: Facts) -> list[str]:
    lag = facts.findings.lag
    return [
        f"lag commit → consistent        deferred changes: {_ms(stats(lag.deferred))}",
        f"                               all changes: "
        f"{_ms(stats(lag.deferred + [0.0] * lag.inline))} "
        f"({lag.inline:,} synced inline at commit)",
        f"                               'off' changes: {_ms(stats(lag.off))} "
        "(until a later sync or the operator's sweep)",
    ]


def _end(facts: Facts) -> list[str]:
    f, m = facts.findings.figures, facts.monitor
    return [
        f"catalogue                      {facts.units} UEs, "
        f"{m.elements_seen[0]:,}–{m.elements_seen[1]:,} ECUE during the run",
        f"longest wait of a due job      {m.max_due_wait:.1f} s; oldest picked heartbeat "
        f"{m.max_picked_age:.1f} s; most jobs queued {m.max_queued:,}",
        f"operator's sweep               {len(facts.ending.swept)} UE(s) drifted by 'off' "
        "changes, queued by resync.enqueue_drifted()",
        f"last_job_sync                  set, no older than the last deferred change, on "
        f"{f['ues_with_deferred_jobs'] - f['last_job_sync_behind']} of the "
        f"{f['ues_with_deferred_jobs']} UEs that had a deferred job",
        f"failed jobs                    {f['failed_jobs']} (all on the poison UE "
        f"{facts.poison}, which stays drifted: excluded from the drift check)",
        f"drift at end                   {f['drift_at_end']} (must be 0)",
        f"jobs lost                      {facts.findings.lost} (must be 0)",
    ]


def _ms(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "-"
    return (
        f"max {s['max'] * 1000:,.0f} ms, p99 {s['p99'] * 1000:,.0f} ms, "
        f"p50 {s['p50'] * 1000:,.0f} ms (n={s['n']:,})"
    )
