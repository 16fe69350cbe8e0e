"""The environment a child process (the daemon, a CLI command, a chaos writer) gets: the
caller's, less everything that would configure ue-resync or talk to systemd behind the test's
back, with the checkout's daemon and support code first on PYTHONPATH."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A developer's UE_RESYNC_*, DATABASE_URL or Laravel DB_* would point the child at their
# database; the NOTIFY_SOCKET, WATCHDOG_* or JOURNAL_STREAM of a systemd unit would make it talk
# to systemd.
SCRUBBED_PREFIXES = (
    "UE_RESYNC_",
    "DATABASE_URL",
    "DB_",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "WATCHDOG_",
)


def pythonpath(checkout_daemon: bool = True) -> str:
    """The checkout first (its daemon too unless `checkout_daemon` is False: a candidate daemon
    brings its own), then the caller's PYTHONPATH."""
    first = [str(ROOT / "daemon")] if checkout_daemon else []
    return os.pathsep.join(p for p in (*first, str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def scrubbed_env(dsn: str | None = None, **extra: str) -> dict[str, str]:
    """os.environ without SCRUBBED_PREFIXES; UE_RESYNC_DATABASE_URL=`dsn` when given, text logs,
    the checkout first on PYTHONPATH (so a run from a snapshot of the tree runs that snapshot);
    `extra` last, so it may set anything back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env["PYTHONPATH"] = pythonpath()
    if dsn is not None:
        env["UE_RESYNC_DATABASE_URL"] = dsn
    env["UE_RESYNC_LOG_FORMAT"] = "text"
    env.update(extra)
    return env
