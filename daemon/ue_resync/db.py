"""Connections. Every connection of the daemon is autocommit (transactions are explicit) and
carries TCP keepalives, so a silent network cut is noticed in seconds rather than hours."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo

from ue_resync import __version__

# libpq parameters, added to the connection string (libpq ignores them on Unix sockets).
_KEEPALIVE = (
    "keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=3 tcp_user_timeout=10000"
)


def is_connection_loss(exc: BaseException, conn: psycopg.AsyncConnection | None = None) -> bool:
    """True when `exc` means the connection is gone (server restart, network cut), as opposed to
    an error of the statement (lock timeout, deadlock, constraint) on a live connection."""
    if conn is not None and conn.broken:
        return True
    if isinstance(exc, psycopg.InterfaceError | OSError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = getattr(exc, "sqlstate", None)
        return state is None or state.startswith("08") or state in {"57P01", "57P02", "57P03"}
    return False


async def connect(dsn: str, role: str, timeout: float = 5.0) -> psycopg.AsyncConnection:
    """An autocommit connection; `role` names it in pg_stat_activity (application_name)."""
    return await psycopg.AsyncConnection.connect(
        make_conninfo(dsn, **_keepalive()),
        autocommit=True,
        connect_timeout=max(1, int(timeout)),
        application_name=f"ue-resync {__version__} {role}",
    )


def connect_sync(dsn: str, role: str, timeout: float = 5.0) -> psycopg.Connection:
    """The same, for the one-shot commands of the CLI."""
    return psycopg.Connection.connect(
        make_conninfo(dsn, **_keepalive()),
        autocommit=True,
        connect_timeout=max(1, int(timeout)),
        application_name=f"ue-resync {__version__} {role}",
    )


def _keepalive() -> dict[str, str]:
    return dict(pair.split("=") for pair in _KEEPALIVE.split())
