"""Login roles for the least-privilege tests (integration and e2e): `login`, a fixture making a
throw-away login role with the grants asked for (registered in tests/conftest.py), and the
helpers those tests share."""

from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from support import catalogue

_serial = itertools.count()


@dataclasses.dataclass(frozen=True)
class Login:
    name: str
    dsn: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)


@pytest.fixture
def login(conn: psycopg.Connection, dsn: str) -> Iterator[Callable[..., Login]]:
    """`login(kind, *grants)`: a new login role (password set, whatever pg_hba asks for) with
    the given GRANT clauses (`'resync_worker'` or `'SELECT ON course_units'`…), dropped at the
    end of the test with everything it owns or was granted in this database."""
    made: list[str] = []

    def make(kind: str, *grants: str) -> Login:
        name = f"ue_resync_t_{kind}_{os.getpid()}_{next(_serial)}"
        password = secrets.token_hex(16)
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        made.append(name)
        for grant in grants:
            conn.execute(sql.SQL(f"GRANT {grant} TO {{}}").format(sql.Identifier(name)))
        return Login(name, make_conninfo(dsn, user=name, password=password))

    yield make
    for name in made:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def denied(conn: psycopg.Connection, statement: str, params: Any = None) -> None:
    """`statement` fails for lack of a privilege (autocommit: the session goes on)."""
    with pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement, params)  # type: ignore[arg-type]


def scalar(conn: psycopg.Connection, statement: str, params: Any = None) -> Any:
    row = conn.execute(statement, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def seed_operator_state(conn: psycopg.Connection) -> dict[str, int]:
    """One of everything the views show: a drifted UE, a failed job with a traceback, a run."""
    drifted = catalogue.unit(conn)
    conn.execute("SET ue_resync.mode = 'off'")
    catalogue.element(conn, drifted, credits=2)
    conn.execute("RESET ue_resync.mode")
    failed = scalar(conn, "SELECT resync.request(%s)", (catalogue.unit(conn),))
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (failed,))
    conn.execute(
        "INSERT INTO resync.pgqueuer_log (job_id, status, entrypoint, priority, traceback) "
        "VALUES (%s, 'failed', 'resync_course_unit', 0, '{\"exception_message\": \"boom\"}')",
        (failed,),
    )
    conn.execute(
        "INSERT INTO resync.job_runs (job_id, course_unit_id, attempt, outcome, finished_at, "
        "error) VALUES (%s, %s, 1, 'failed', now(), 'boom')",
        (failed, drifted),
    )
    return {"drifted": drifted, "failed_job": failed}


APP_GRANTS = (
    "SELECT, INSERT, UPDATE, DELETE ON course_units, course_unit_elements",
    "USAGE ON SEQUENCE course_units_id_seq, course_unit_elements_id_seq",
)
