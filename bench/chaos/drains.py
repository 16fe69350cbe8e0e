"""The end of a chaos run, before its verdict: faults off, writers stopped and their records
read, the daemons' drains around the operator's sweep, and the daemons stopped."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from bench.chaos import checks
from bench.chaos.faults import Faults, registered
from support.poll import WaitTimeout, wait_for

if TYPE_CHECKING:
    from bench.chaos.run import ChaosRun


def finish(run: ChaosRun, faults: Faults) -> None:
    """Faults off, writers stopped, daemons drain; the operator's sweep for 'off' changes;
    daemons drain again."""
    run.say("chaos over: restoring links and daemons, stopping the writers")
    faults.settle()
    for d in run.daemons:
        if not d.alive():
            d.start()
    records: list[dict[str, Any]] = []
    summaries: list[dict[str, int]] = []
    for w in run.writers:
        code = w.stop(60)
        if code is None:
            run.fail("writers stop on SIGTERM", f"writer {w.index} ({w.kind}) was killed")
        lines, summary = w.records()
        records += lines
        summaries.append(summary)
    run.changes = checks.Changes.of(records)
    run.writer_counts = Counter()
    for s in summaries:
        run.writer_counts.update(s)

    drain(run, "first drain")
    with run.connect() as conn:
        run.sweep_at = float(
            checks.one(conn, "SELECT extract(epoch FROM clock_timestamp())::float8")
        )
        before = checks.drifted(conn)
        explained = run.changes.explained_drift()
        unexplained = [u for u in before if u != run.cat.poison and u not in explained]
        if unexplained:
            run.fail(
                "drift before the sweep comes from 'off' changes only",
                f"{len(unexplained)} UE(s) drifted with no 'off' or unknown-outcome change: "
                f"{unexplained[:20]} (a deferred change was never resynced)",
            )
        run.swept = [u for u in before if u != run.cat.poison]
        queued = checks.one(conn, "SELECT resync.enqueue_drifted()")
    run.say(
        f"operator's sweep: {len(before)} UE(s) drifted after the first drain "
        f"({len(run.swept)} besides the poison UE); resync.enqueue_drifted() queued {queued}"
    )
    drain(run, "second drain")
    run.swept_end = run.server_now()


def drain(run: ChaosRun, what: str) -> None:
    with run.connect() as conn:
        started = time.monotonic()
        try:
            done = wait_for(
                lambda: (lambda q: q["queued"] == 0 and q["picked"] == 0)(checks.queue_state(conn)),
                run.args.drain_s,
                f"{what}: the queue to empty",
                interval=0.2,
            )
        except WaitTimeout:
            done = False
        took = time.monotonic() - started
        if not done:
            q = checks.queue_state(conn)
            run.fail("the daemons drain the queue", f"{what}: still {q} after {took:.0f} s")
        else:
            run.say(f"{what}: queue empty after {took:.1f} s")
        run.figures.setdefault("drain_seconds", {})[what] = round(took, 2)


def stop_daemons(run: ChaosRun) -> None:
    codes = []
    for d in run.daemons:
        registered(run.server.dsn, d, 30)
        code = d.stop(30)
        codes.append(code)
        if code != 0:
            run.fail("daemons exit 0 on SIGTERM", f"daemon {d.index} at the end: {code}")
    run.figures["final_exit_codes"] = codes
