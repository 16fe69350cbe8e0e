"""The chaos run's server with `--failover`: a primary and a synchronous streaming replica
(support/replication.py, `synchronous_commit = remote_apply`), and the failover fault.

It stands where the single server's support.postgres.Database stands (same attributes and
methods; it can always be restarted). The writers connect with a multi-host URL
(`target_session_attrs=read-write`); the daemons go through their proxy links, which forward to
the primary and are moved to the new one after a promotion, as a virtual IP or a DNS name would
be. The failover fault: the primary crashes (`pg_ctl stop -m immediate`), the replica is
promoted, the links follow it, every live daemon must be back (a heartbeat on the new primary)
within 15 s of the promotion; then the failed node is cloned afresh from the new primary and
attached as its synchronous replica again, so the next failover (and any committed change) is
covered too."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from support import catalogue, replication

FOLLOW_WITHIN = 15.0
# Room for every daemon, writer and check at once (the replica needs at least the primary's).
SERVER_SETTINGS = {"max_connections": "200", "log_min_error_statement": "panic"}


class ReplicatedServer:
    kind = "replicated"
    can_restart = True

    def __init__(self, workdir: Path, bindir: Path | None = None) -> None:
        self.workdir = workdir
        self.bindir = bindir or replication.embedded_bindir()
        self.dbname = f"ue_resync_chaos_{os.getpid()}"
        self.dsn = ""
        self.pair: replication.Pair | None = None
        self.restarts = 0
        self.failovers: list[dict[str, float]] = []

    @property
    def _pair(self) -> replication.Pair:
        assert self.pair is not None, "start() first"
        return self.pair

    def start(self) -> None:
        self.pair = replication.Pair(self.bindir, synchronous=True, settings=SERVER_SETTINGS)
        self.pair.start()
        with self.pair.primary.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        self.dsn = self.pair.url(self.dbname)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            catalogue.install(conn)

    @property
    def target(self) -> tuple[Any, ...]:
        """Where the proxy links forward to: the current primary."""
        return ("tcp", "127.0.0.1", self._pair.primary.port)

    def version(self) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return f"{row[0] if row else '?'} (primary and synchronous replica)"

    def via(self, port: int) -> str:
        """The database's DSN through a proxy link listening on `port`."""
        return make_conninfo(
            host="127.0.0.1", port=port, user="postgres", dbname=self.dbname, connect_timeout=3
        )

    # -- the PostgreSQL restart fault, on the primary --

    def restart(self) -> float:
        started = time.monotonic()
        node = self._pair.primary
        node.tool(
            "pg_ctl",
            *(
                "restart",
                "-w",
                "-t",
                "120",
                "-m",
                "fast",
                "-D",
                str(node.data),
                "-l",
                str(node.log),
            ),
        )
        self.restarts += 1
        return time.monotonic() - started

    # -- the failover fault --

    def fail_over(self, links: list[Any], live_pids: list[int]) -> dict[str, float]:
        """Crash the primary, promote the replica, point `links` at it, wait for the daemons of
        `live_pids` to heartbeat there, rebuild the replica. Its timings, in seconds."""
        pair = self._pair
        t0 = time.monotonic()
        pair.crash_primary()
        promoted_at = pair.promote()
        promoted = time.monotonic()
        for link in links:
            link.target = self.target
        followed = self._wait_followed(live_pids, promoted_at)
        back = time.monotonic()
        pair.rebuild_replica()
        figures = {
            "outage_to_promotion_s": promoted - t0,
            "promotion_to_daemons_back_s": followed,
            "replica_rebuilt_s": time.monotonic() - back,
        }
        self.failovers.append(figures)
        return figures

    def _wait_followed(self, pids: list[int], promoted_at: float) -> float:
        """Seconds from the promotion until every daemon of `pids` has a heartbeat on the new
        primary; FOLLOW_WITHIN * 2 at most (a longer wait is reported, not waited for)."""

        def back() -> bool:
            with psycopg.connect(self._pair.primary.dsn(self.dbname), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM resync.workers WHERE pid = ANY(%s) "
                    "AND heartbeat_at >= to_timestamp(%s)",
                    (pids, promoted_at),
                ).fetchone()
            return bool(row and row[0] >= len(pids))

        with contextlib.suppress(TimeoutError):
            replication.wait(back, FOLLOW_WITHIN * 2, "the daemons on the new primary")
        return time.time() - promoted_at

    # -- the end --

    def stop(self) -> None:
        if self.pair is not None:
            self.pair.stop()

    def log_tail(self, lines: int = 30) -> str:
        if self.pair is None:
            return ""
        out = []
        for node in (self.pair.primary, self.pair.replica):
            if node.log.exists():
                tail = node.log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"-- {node.name} --\n" + "\n".join(tail))
        return "\n".join(out)
