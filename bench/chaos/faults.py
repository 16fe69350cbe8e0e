"""The faults a chaos run injects, one every few seconds, in shuffled rounds of every kind:

sigkill     SIGKILL of a daemon (one running a job when there is one), restarted 0.5–2 s later
sigterm     SIGTERM of a daemon (it must drain and exit 0), restarted at once
pg_restart  `pg_ctl restart -m fast` of our own server; on a server we cannot restart,
            pg_terminate_backend of every daemon connection instead (said in the output)
net_cut     one daemon's proxy link cut (connections aborted, new ones refused) for 1–5 s
poison      a resync requested for the poison UE, whose every attempt fails
failover    (with --failover only) the primary crashes, its synchronous replica is promoted, the
            daemons' links follow it; every live daemon must be back within 15 s; the failed
            node is then cloned afresh as the new replica (bench/chaos/failover.py)"""

from __future__ import annotations

import dataclasses
import random
import signal
import time
from collections import Counter
from collections.abc import Callable

import psycopg

from bench.chaos.failover import FOLLOW_WITHIN, ReplicatedServer
from bench.chaos.proxy import Link, Proxy
from support.poll import WaitTimeout, wait_for
from support.postgres import Database
from support.processes import Slot

KINDS = ("sigkill", "sigterm", "pg_restart", "net_cut", "poison")
FAILOVER = "failover"


@dataclasses.dataclass
class Event:
    at: float  # seconds since the run started
    kind: str
    detail: str


def registered(dsn: str, daemon: Slot, timeout: float) -> bool:
    """Wait until `daemon`'s process has its row in resync.workers (it is started)."""

    def up() -> bool:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM resync.workers WHERE pid = %s AND stopped_at IS NULL",
                    (daemon.pid,),
                ).fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0])

    try:
        return wait_for(up, timeout, f"{daemon.label} to register", interval=0.1)
    except WaitTimeout:
        return False


def terminate_daemons(dsn: str) -> int:
    """What stands in for a restart on a server we cannot restart: every backend of the daemons
    in the database of `dsn` is terminated. Returns how many."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'ue-resync%%' "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


class Faults:
    def __init__(
        self,
        server: Database | ReplicatedServer,
        proxy: Proxy,
        daemons: list[Slot],
        poison: int,
        rng: random.Random,
        t0: float,
    ) -> None:
        self.server = server
        self.proxy = proxy
        self.daemons = daemons
        self.poison_unit = poison
        self.rng = rng
        self.t0 = t0
        self.counts: Counter[str] = Counter()
        self.events: list[Event] = []
        self.problems: list[str] = []
        self.later: list[tuple[float, Callable[[], None], str]] = []
        self._round: list[str] = []
        # A server that can fail over (bench/chaos/failover.py) adds that fault to each round.
        self.kinds = (*KINDS, FAILOVER) if isinstance(server, ReplicatedServer) else KINDS

    def log(self, kind: str, detail: str) -> None:
        event = Event(time.monotonic() - self.t0, kind, detail)
        self.events.append(event)
        print(f"  [{event.at:7.1f} s] {kind:<10} {detail}", flush=True)

    def next_kind(self) -> str:
        if not self._round:
            self._round = list(self.kinds)
            self.rng.shuffle(self._round)
        return self._round.pop()

    def inject(self, kind: str | None = None) -> None:
        kind = kind or self.next_kind()
        getattr(self, kind)()
        self.counts[kind] += 1

    def due(self) -> None:
        """Run the scheduled follow-ups (restarts, restores) whose time has come."""
        now = time.monotonic()
        for item in [x for x in self.later if x[0] <= now]:
            self.later.remove(item)
            item[1]()

    def settle(self) -> None:
        """Run every pending follow-up now: links restored, daemons restarted."""
        for _, action, _ in sorted(self.later, key=lambda x: x[0]):
            action()
        self.later.clear()

    # -- the faults --

    def _running_pids(self) -> set[int]:
        try:
            with psycopg.connect(self.server.dsn, autocommit=True, connect_timeout=3) as conn:
                rows = conn.execute(
                    "SELECT DISTINCT w.pid FROM resync.job_runs r "
                    "JOIN resync.workers w ON w.id = r.worker_id WHERE r.outcome = 'running'"
                ).fetchall()
        except psycopg.Error:
            return set()
        return {r[0] for r in rows}

    def _cut(self, daemon: Slot) -> bool:
        return self.proxy.links[daemon.label].is_cut

    def _victim(self) -> Slot | None:
        alive = [d for d in self.daemons if d.alive() and not self._cut(d)]
        if not alive:
            return None
        busy = self._running_pids()
        mid_job = [d for d in alive if d.pid in busy]
        return self.rng.choice(mid_job or alive)

    def sigkill(self) -> None:
        victim = self._victim()
        if victim is None:
            self.log("sigkill", "skipped: no daemon up")
            return
        mid_job = victim.pid in self._running_pids()
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        self.counts["sigkill_mid_job" if mid_job else "sigkill_idle"] += 1
        delay = self.rng.uniform(0.5, 2.0)
        self.log(
            "sigkill",
            f"{victim.label} (pid {victim.pid}, {'mid-job' if mid_job else 'idle'}); "
            f"restart in {delay:.1f} s",
        )
        self.later.append((time.monotonic() + delay, victim.start, f"restart {victim.label}"))

    def sigterm(self) -> None:
        victim = self._victim()
        if victim is None:
            self.log("sigterm", "skipped: no daemon up")
            return
        # A SIGTERM before the daemon has installed its handlers would kill it (Python's
        # default): wait until it has registered in resync.workers, i.e. it is up.
        registered(self.server.dsn, victim, 30)
        started = time.monotonic()
        victim.signal(signal.SIGTERM)
        code = victim.wait(30)
        took = time.monotonic() - started
        if code != 0:
            self.problems.append(
                f"{victim.label} exited {code} on SIGTERM (expected 0):\n{victim.tail()}"
            )
        self.log("sigterm", f"{victim.label} exited {code} after {took:.1f} s; restarted")
        victim.start()

    def pg_restart(self) -> None:
        if self.server.can_restart:
            took = self.server.restart()
            self.log("pg_restart", f"pg_ctl restart -m fast took {took:.1f} s")
        else:
            n = terminate_daemons(self.server.dsn)
            self.counts["pg_terminate_backend"] += 1
            self.log(
                "pg_restart",
                f"cannot restart a server we did not start: terminated {n} daemon backend(s) "
                "instead (pg_terminate_backend)",
            )

    def net_cut(self) -> None:
        candidates = [d for d in self.daemons if not self._cut(d)]
        if not candidates:
            return
        victim = self.rng.choice(candidates)
        link = self.proxy.links[victim.label]
        aborted = self.proxy.cut(link)
        hold = self.rng.uniform(1.0, 5.0)
        self.log(
            "net_cut",
            f"{victim.label}'s link cut ({aborted} connection(s) aborted) for {hold:.1f} s",
        )

        def restore(link: Link = link, label: str = victim.label) -> None:
            self.proxy.restore(link)
            self.log("restore", f"{label}'s link restored")

        self.later.append((time.monotonic() + hold, restore, f"restore {victim.label}"))

    def failover(self) -> None:
        assert isinstance(self.server, ReplicatedServer)
        # The daemons that can come back at once: up, and not behind a cut link.
        live = [d.pid for d in self.daemons if d.alive() and not self._cut(d) and d.pid]
        took = self.server.fail_over(list(self.proxy.links.values()), live)
        back = took["promotion_to_daemons_back_s"]
        if back > FOLLOW_WITHIN:
            self.problems.append(
                f"failover: the daemons were back {back:.1f} s after the promotion "
                f"(more than {FOLLOW_WITHIN:g} s)"
            )
        self.log(
            "failover",
            f"primary crashed, replica promoted after {took['outage_to_promotion_s']:.1f} s; "
            f"{len(live)} daemon(s) back {back:.1f} s after the promotion; "
            f"replica rebuilt in {took['replica_rebuilt_s']:.1f} s",
        )

    def poison(self) -> None:
        with psycopg.connect(self.server.dsn, autocommit=True, connect_timeout=5) as conn:
            job = conn.execute(
                "SELECT resync.request(%s, 'chaos_poison')", (self.poison_unit,)
            ).fetchone()[0]
        self.log("poison", f"resync of the poison UE {self.poison_unit} requested (job {job})")
