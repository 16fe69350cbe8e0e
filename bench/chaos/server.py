"""The chaos run's PostgreSQL (support.postgres): an embedded one started for the run, or the one
of UE_RESYNC_DATABASE_URL; either way the run works in a database of its own, dropped at the end.

The embedded server listens on a Unix socket in its data directory; the daemons reach it
through the TCP proxy (bench/chaos/proxy.py). `restart()` is `pg_ctl restart -m fast`, which
reuses the options of the start. A server of UE_RESYNC_DATABASE_URL is not ours to restart:
`can_restart` is False and the run terminates the daemons' backends instead
(pg_terminate_backend), saying so."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from support.postgres import Postgres, start_postgres

# Room for every daemon, writer and check at once; a log that keeps the run's own lines.
SERVER_SETTINGS = {
    "max_connections": "200",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "log_connections": "off",
    "log_disconnections": "off",
}


class ChaosServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.dbname = f"ue_resync_chaos_{os.getpid()}"
        self.dsn = ""
        self.server: Postgres | None = None

    def start(self) -> None:
        self.server = start_postgres(
            os.environ.get("UE_RESYNC_DATABASE_URL"),
            settings=SERVER_SETTINGS,
            prefix="ue-resync-chaos-pg-",
        )
        self.dsn = self.server.create_database(self.dbname)

    @property
    def _pg(self) -> Postgres:
        assert self.server is not None, "start() first"
        return self.server

    @property
    def kind(self) -> str:
        return self._pg.kind

    @property
    def can_restart(self) -> bool:
        return self._pg.can_restart

    @property
    def target(self) -> tuple[Any, ...]:
        """Where the proxy links forward to."""
        return self._pg.socket_target()

    def version(self) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def via(self, port: int) -> str:
        """The database's DSN through a proxy link listening on `port`."""
        return make_conninfo(self.dsn, host="127.0.0.1", port=port)

    # -- the PostgreSQL restart fault --

    def restart(self) -> float:
        """`pg_ctl restart -m fast`; returns how long the server was away, in seconds."""
        return self._pg.restart("fast")

    def terminate_daemons(self) -> int:
        """What stands in for a restart on a server we cannot restart: every backend of the
        daemons in our database is terminated. Returns how many."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'ue-resync%%' "
                "AND pid <> pg_backend_pid()"
            ).fetchone()
        return int(row[0]) if row else 0

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.drop_database(self.dbname)
        self.server.stop()

    def log_tail(self, lines: int = 30) -> str:
        return self._pg.log_tail(lines) if self.server is not None else ""
