"""Connections. Every connection of the daemon is autocommit (transactions are explicit) and
carries TCP keepalives, so a silent network cut is noticed in seconds rather than hours.

No connection prepares statements (`prepare_threshold=None`): behind a transaction pooler
(pgbouncer before 1.21, or with max_prepared_statements = 0) each transaction may land on another
server connection, where psycopg's `_pg3_N` statement is unknown or already taken. Nothing tells
a client reliably that it talks to a pooler, so preparation is off everywhere; the statements are
short calls into server functions, whose own plans PL/pgSQL caches in the server session."""

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


async def connect(
    dsn: str, role: str, timeout: float = 5.0, listen: bool = False
) -> psycopg.AsyncConnection:
    """An autocommit connection; `role` names it in pg_stat_activity (application_name).

    Only the `listen` connection keeps the notifications it receives. Behind a transaction
    pooler, a server connection that once ran a LISTEN passes its notifications to whichever
    client it serves next, and psycopg would keep them on that connection without end."""
    conn = await psycopg.AsyncConnection.connect(
        make_conninfo(dsn, **_keepalive()),
        autocommit=True,
        prepare_threshold=None,
        connect_timeout=max(1, int(timeout)),
        application_name=f"ue-resync {__version__} {role}",
    )
    if not listen:
        conn.add_notify_handler(_discard)
    return conn


def connect_sync(dsn: str, role: str, timeout: float = 5.0) -> psycopg.Connection:
    """The same, for the one-shot commands of the CLI."""
    return psycopg.Connection.connect(
        make_conninfo(dsn, **_keepalive()),
        autocommit=True,
        prepare_threshold=None,
        connect_timeout=max(1, int(timeout)),
        application_name=f"ue-resync {__version__} {role}",
    )


def describe(info: psycopg.ConnectionInfo) -> str:
    """Where a connection went, for a log line (never its password):
    `database app on db.example.org:5432 as ue_resync_daemon`."""
    return f"database {info.dbname} on {info.host}:{info.port} as {info.user}"


def _discard(_: psycopg.Notify) -> None:
    return None


def _keepalive() -> dict[str, str]:
    return dict(pair.split("=") for pair in _KEEPALIVE.split())
