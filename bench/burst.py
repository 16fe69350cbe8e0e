"""Burst: 10,000 single-row element updates on the 400 elements of 100 UEs, as fast as two
writers go, while a daemon (defaults) runs:

- writer A in deferred mode (each update queues or coalesces a job due now);
- writer B inline, while a third session keeps 5 random UEs locked (FOR UPDATE) for 300 ms at a
  time, so B's syncs of those UEs wait out ue_resync.lock_timeout and defer (a job due in 2 min,
  by the error policy, which a later deferred event for the UE pulls forward).

A monitor samples, every 10 ms, the most queued jobs any UE has. Once the writers are done and
nothing due is left, the runs each UE got since the burst began are counted. Rounds are separate
bursts; the queue is cleared between them."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from bench import common
from bench.common import Bench, Target
from support import catalogue, processes

NAME = "burst"
TITLE = "burst of element updates on few UEs while the daemon runs"
MAX_QUEUED = """
SELECT coalesce(max(c), 0) FROM (
    SELECT count(*) AS c FROM resync.pgqueuer
    WHERE status = 'queued' AND entrypoint = 'resync_course_unit'
    GROUP BY headers ->> 'course_unit_id') per_unit
"""


def measure(b: Bench) -> None:
    units = 10 if b.quick else 100
    updates = 1_000 if b.quick else 10_000
    b.params.update(
        units=units,
        elements=units * 4,
        updates=updates,
        writers="1 deferred + 1 inline, single-row transactions",
        locker="5 random UEs held FOR UPDATE 300 ms, then 100 ms free",
        daemon="subprocess, defaults",
    )
    with b.connect() as conn:
        catalogue.load_catalogue(conn, units + 1)  # the last UE is the warm-up's
    proc = b.start_daemon()
    per_round: list[dict[str, Any]] = []
    try:
        b.daemon_ready(proc, units + 1)
        for r in range(b.rounds):
            per_round.append(burst(b, proc, r, units, updates))
            s = per_round[-1]
            common.log(
                f"burst: round {r + 1}/{b.rounds}: {s['seconds']:.1f} s, runs per UE max "
                f"{s['runs_max']}, median {s['runs_median']:g}, most queued per UE "
                f"{s['max_queued']}"
            )
    finally:
        processes.stop(proc)
    b.paired("burst duration", "s", [s["seconds"] for s in per_round])
    b.paired("updates per second", "tps", [updates / s["seconds"] for s in per_round])
    b.paired(
        "resync runs per UE, max",
        "runs",
        [s["runs_max"] for s in per_round],
        target=Target("<=", 2, on="value"),
    )
    b.paired("resync runs per UE, median", "runs", [s["runs_median"] for s in per_round])
    b.paired(
        "most queued jobs of one UE, ever",
        "jobs",
        [s["max_queued"] for s in per_round],
        target=Target("<=", 1, on="value"),
    )
    b.paired("queue samples taken", "samples", [s["samples"] for s in per_round])
    b.paired("inline syncs deferred (lock timeout)", "syncs", [s["deferred"] for s in per_round])
    b.paired(
        "events per resync run (coalescing)", "events", [s["events_per_run"] for s in per_round]
    )
    b.paired("settle after the burst", "s", [s["settle"] for s in per_round])
    b.paired("jobs left delayed (2 min policy)", "jobs", [s["left_delayed"] for s in per_round])
    b.paired("UEs still drifted after settling", "UEs", [s["drifted_after"] for s in per_round])
    b.extra["rounds"] = per_round


def burst(b: Bench, proc: Any, r: int, units: int, updates: int) -> dict[str, Any]:
    """Round `r`: the queue emptied, the writers run (the locker holding UEs, the monitor
    sampling the queue), then the daemon settles what they queued; the round's figures."""
    with b.connect() as conn:
        conn.execute("SELECT resync.clear_queue()")
        conn.execute("TRUNCATE resync.job_runs, resync.sync_failures")
        start = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    load = _Load(b, r, units, updates)
    load.start()
    began = time.monotonic()
    load.join_writers()
    seconds = time.monotonic() - began
    with b.connect() as conn:
        common.wait_for(
            lambda: _settled(conn, proc), 60, "the burst's jobs to be resynced", interval=0.05
        )
        settle = time.monotonic() - began - seconds
        load.finish()
        per_unit, deferred, delayed, drift = _tally(conn, units, start)
    runs = sum(per_unit)
    return {
        "seconds": seconds,
        "settle": settle,
        "runs_total": runs,
        "runs_max": max(per_unit),
        "runs_median": common.median(per_unit),
        "max_queued": max(load.samples, default=0),
        "samples": len(load.samples),
        "deferred": deferred,
        "left_delayed": delayed,
        "drifted_after": drift,
        "events_per_run": updates / runs if runs else float("nan"),
    }


class _Load:
    """The threads of one burst: a deferred and an inline writer, the locker holding UEs while
    they write, the monitor sampling the queue until `finish`. The first error of any of them
    stops them all and is raised by `finish`."""

    def __init__(self, b: Bench, r: int, units: int, updates: int) -> None:
        self.b = b
        self.units = units
        self.stop = threading.Event()
        self.writers_done = threading.Event()
        self.samples: list[int] = []
        self.errors: list[BaseException] = []
        self.rng = random.Random(100 + r)
        self.helpers = [self._thread(self._monitor), self._thread(self._locker)]
        self.writers = [
            self._thread(lambda: self._write("deferred", updates // 2, 1000 + r)),
            self._thread(lambda: self._write("inline", updates - updates // 2, 2000 + r)),
        ]

    def _thread(self, fn: Callable[[], None]) -> threading.Thread:
        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # reported by finish, after the join
                self.errors.append(exc)
                self.stop.set()

        return threading.Thread(target=body)

    def start(self) -> None:
        for t in self.helpers + self.writers:
            t.start()

    def join_writers(self) -> None:
        for t in self.writers:
            t.join()
        self.writers_done.set()

    def finish(self) -> None:
        self.stop.set()
        for t in self.helpers:
            t.join()
        if self.errors:
            raise self.errors[0]

    def _monitor(self) -> None:
        with self.b.connect() as conn:
            while not self.stop.is_set():
                self.samples.append(conn.execute(MAX_QUEUED).fetchone()[0])
                time.sleep(0.01)

    def _locker(self) -> None:
        with self.b.connect() as conn:
            while not self.writers_done.is_set():
                with conn.transaction():
                    conn.execute(
                        "SELECT 1 FROM course_units WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                        (self.rng.sample(range(1, self.units + 1), min(5, self.units)),),
                    )
                    time.sleep(0.3)
                time.sleep(0.1)

    def _write(self, mode: str, count: int, seed: int) -> None:
        local = random.Random(seed)
        with self.b.connect() as conn:
            conn.execute("SELECT set_config('ue_resync.mode', %s, false)", (mode,))
            for _ in range(count):
                if self.stop.is_set():
                    return
                conn.execute(
                    "UPDATE course_unit_elements SET hours_td = hours_td + 1 WHERE id = %s",
                    (local.randint(1, self.units * 4),),
                )


def _settled(conn: psycopg.Connection, proc: Any) -> bool:
    """Nothing due within a minute is left, and nothing runs: what is left is the 2-minute
    policy retries of the burst."""
    processes.check_alive(proc)
    due, running = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'queued' "
        "AND execute_after <= now() + interval '1 minute'), "
        "count(*) FILTER (WHERE status = 'picked') FROM resync.pgqueuer"
    ).fetchone()
    return bool(due == 0 and running == 0)


def _tally(conn: psycopg.Connection, units: int, start: Any) -> tuple[list[int], int, int, int]:
    """The succeeded runs of each UE since `start`, the inline syncs deferred, the jobs left
    delayed and the UEs left drifted."""
    per_unit = [
        row[0]
        for row in conn.execute(
            "SELECT count(r.id) FROM generate_series(1, %s) u "
            "LEFT JOIN resync.job_runs r ON r.course_unit_id = u "
            "AND r.started_at >= %s AND r.outcome = 'succeeded' GROUP BY u",
            (units, start),
        ).fetchall()
    ]
    deferred = conn.execute("SELECT count(*) FROM resync.sync_failures").fetchone()[0]
    delayed = conn.execute(
        "SELECT count(*) FROM resync.pgqueuer WHERE status = 'queued'"
    ).fetchone()[0]
    # Each element's hours_td grew by its updates: a UE is right when it matches them.
    return per_unit, deferred, delayed, catalogue.drift_count(conn)


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(NAME, TITLE, measure, argv, __doc__, full_rounds=3, quick_rounds=1)


if __name__ == "__main__":
    sys.exit(main())
