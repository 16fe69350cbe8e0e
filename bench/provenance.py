"""The provenance of a benchmark's figures, recorded with every result: the server it ran on
(support.postgres: embedded, or the one of UE_RESYNC_DATABASE_URL) with its version and settings,
the cores, the date, the git commit, and what BENCH_EXTRA_SQL / BENCH_DAEMON changed when set."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from typing import Any

import psycopg
from psycopg import sql

from support.env import ROOT
from support.postgres import Postgres


def meta(conn: psycopg.Connection, server: Postgres) -> dict[str, Any]:
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
