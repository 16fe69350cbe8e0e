"""The end of a chaos run, before its verdict: faults off, writers stopped and their records
read, the daemons' drains around the operator's sweep, and the daemons stopped."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg

from bench.chaos import checks, writer
from bench.chaos.faults import Faults, registered
from bench.chaos.monitor import Reporter
from support.poll import WaitTimeout, wait_for
from support.processes import Slot

Connect = Callable[[], psycopg.Connection]


@dataclasses.dataclass
class Ending:
    """What the end of the chaos learns, for the verdict and the report."""

    changes: checks.Changes  # the writers' records
    writer_counts: Counter[str]  # their summaries, added up
    sweep_at: float  # when the operator swept, server clock (epoch s)
    swept: list[int]  # the UEs drifted at the sweep, the poison UE aside
    swept_end: float  # when the drain after the sweep was over, server clock
    drain_seconds: dict[str, float]


def finish(
    out: Reporter,
    connect: Connect,
    faults: Faults,
    daemons: list[Slot],
    writers: list[Slot],
    poison: int,
    drain_s: float,
) -> Ending:
    """Faults off, writers stopped, daemons drain; the operator's sweep for 'off' changes;
    daemons drain again. Each drain has `drain_s` seconds."""
    out.say("chaos over: restoring links and daemons, stopping the writers")
    faults.settle()
    for d in daemons:
        if not d.alive():
            d.start()
    changes, writer_counts = stop_writers(out, writers)
    seconds: dict[str, float] = {}
    drain(out, connect, "first drain", drain_s, seconds)
    with connect() as conn:
        sweep_at = server_now(conn)
        before = checks.drifted(conn)
        explained = changes.explained_drift()
        unexplained = [u for u in before if u != poison and u not in explained]
        if unexplained:
            out.fail(
                "drift before the sweep comes from 'off' changes only",
                f"{len(unexplained)} UE(s) drifted with no 'off' or unknown-outcome change: "
                f"{unexplained[:20]} (a deferred change was never resynced)",
            )
        swept = [u for u in before if u != poison]
        queued = checks.one(conn, "SELECT resync.enqueue_drifted()")
    out.say(
        f"operator's sweep: {len(before)} UE(s) drifted after the first drain "
        f"({len(swept)} besides the poison UE); resync.enqueue_drifted() queued {queued}"
    )
    drain(out, connect, "second drain", drain_s, seconds)
    with connect() as conn:
        swept_end = server_now(conn)
    return Ending(changes, writer_counts, sweep_at, swept, swept_end, seconds)


def stop_writers(out: Reporter, writers: list[Slot]) -> tuple[checks.Changes, Counter[str]]:
    """SIGTERM to every writer; what they recorded, and their summaries added up."""
    records: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for w in writers:
        if w.stop(60) is None:
            out.fail("writers stop on SIGTERM", f"{w.label} was killed")
        lines, summary = writer.records(writer.outputs(w))
        records += lines
        counts.update(summary)
    return checks.Changes.of(records), counts


def server_now(conn: psycopg.Connection) -> float:
    return float(checks.one(conn, "SELECT extract(epoch FROM clock_timestamp())::float8"))


def drain(
    out: Reporter, connect: Connect, what: str, timeout: float, seconds: dict[str, float]
) -> None:
    """Wait up to `timeout` for the queue to empty (nothing queued, nothing picked); how long it
    took goes to `seconds[what]`, and a queue still busy fails the run."""
    with connect() as conn:
        started = time.monotonic()
        try:
            done = wait_for(
                lambda: (lambda q: q["queued"] == 0 and q["picked"] == 0)(checks.queue_state(conn)),
                timeout,
                f"{what}: the queue to empty",
                interval=0.2,
            )
        except WaitTimeout:
            done = False
        took = time.monotonic() - started
        if not done:
            q = checks.queue_state(conn)
            out.fail("the daemons drain the queue", f"{what}: still {q} after {took:.0f} s")
        else:
            out.say(f"{what}: queue empty after {took:.1f} s")
        seconds[what] = round(took, 2)


def stop_daemons(out: Reporter, dsn: str, daemons: list[Slot]) -> None:
    """SIGTERM to every daemon (once it has registered): each must exit 0."""
    for d in daemons:
        registered(dsn, d, 30)
        code = d.stop(30)
        if code != 0:
            out.fail("daemons exit 0 on SIGTERM", f"{d.label} at the end: {code}")
