"""An application's writes through pgbouncer (transaction and session pooling) behave as direct:
the row and statement trigger paths, a deferral on a locked unit, the modes with SET LOCAL,
resync.requests and resync.request(). A plain SET, under transaction pooling, leaks to the next
client of the server connection: the reason the modes are set with SET LOCAL there."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from support import catalogue
from tests import pgbouncer


@pytest.fixture(scope="module", params=["transaction", "session"])
def bouncer(request, pg_server) -> Iterator[pgbouncer.Pgbouncer]:
    with pgbouncer.started(pg_server.host, pg_server.port, request.param) as b:
        yield b


@pytest.fixture
def app(bouncer, dsn) -> Iterator[psycopg.Connection]:
    """The application's connection, through pgbouncer, as PHP's PDO makes it: no prepared
    statements kept across transactions."""
    with psycopg.connect(bouncer.route(dsn), autocommit=True, prepare_threshold=None) as c:
        yield c


def test_row_and_statement_paths_sync_inline(app, conn):
    a, b = catalogue.unit(app), catalogue.unit(app)
    e1 = catalogue.element(app, a, credits=2, cm=10, td=0, tp=0)  # one row: the row path
    app.execute(
        "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, hours_cm, "
        "hours_td, hours_tp, hours_total) "
        "SELECT %s, 'M' || g, 'multi', 1, 1, 1, 1, 3 FROM generate_series(1, 3) g",
        (b,),
    )  # several rows: the statement path
    assert catalogue.totals(conn, a)[:1] == (2,)
    assert catalogue.totals(conn, b)[0] == 3
    app.execute("UPDATE course_unit_elements SET credits = 5 WHERE id = %s", (e1,))
    app.execute(
        "UPDATE course_unit_elements SET credits = credits + 1 WHERE course_unit_id = %s", (b,)
    )
    app.execute("UPDATE course_unit_elements SET course_unit_id = %s WHERE id = %s", (b, e1))
    assert catalogue.totals(conn, a)[0] == 0
    assert catalogue.totals(conn, b)[0] == 5 + 6
    app.execute("DELETE FROM course_unit_elements WHERE course_unit_id = %s AND id <> %s", (b, e1))
    assert catalogue.totals(conn, b)[0] == 5
    assert catalogue.jobs(conn) == []
    assert catalogue.drift_count(conn) == 0


def test_a_locked_unit_defers_through_the_pooler(app, conn, dsn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=3)
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
        with app.transaction():
            app.execute("SET LOCAL ue_resync.lock_timeout = '50ms'")
            app.execute("UPDATE course_unit_elements SET credits = 4 WHERE id = %s", (e,))
        holder.rollback()
    [job] = catalogue.jobs(conn, u)
    assert job["payload"]["sqlstate"] == "55P03"
    assert catalogue.totals(conn, u)[0] == 3  # drifts until the job runs


def test_set_local_modes_apply_to_their_transaction_only(app, conn):
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=1)
    with app.transaction():
        app.execute("SET LOCAL ue_resync.mode = 'deferred'")
        app.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
    [job] = catalogue.jobs(conn, u)
    assert job["payload"]["reason"] == "deferred_after_updated"
    assert catalogue.totals(conn, u)[0] == 1
    with app.transaction():
        app.execute("SET LOCAL ue_resync.mode = 'off'")
        app.execute("UPDATE course_unit_elements SET credits = 3 WHERE id = %s", (e,))
    assert len(catalogue.jobs(conn, u)) == 1  # off: no job of its own
    app.execute("UPDATE course_unit_elements SET credits = 4 WHERE id = %s", (e,))  # inline
    assert catalogue.totals(conn, u)[0] == 4


def test_requests_and_request_function(app, conn):
    u, v = catalogue.unit(conn), catalogue.unit(conn)
    app.execute("INSERT INTO resync.requests (course_unit_id, reason) VALUES (%s, 'app')", (u,))
    job = app.execute("SELECT resync.request(%s, 'app_fn')", (v,)).fetchone()[0]
    assert [j["payload"]["reason"] for j in catalogue.jobs(conn, u)] == ["app"]
    assert [j["id"] for j in catalogue.jobs(conn, v)] == [job]
    catalogue.element(conn, u, credits=2)
    conn.execute("UPDATE course_units SET credits = 0 WHERE id = %s", (u,))
    changes = app.execute("SELECT resync.sync_now(%s)", (u,)).fetchone()[0]
    assert changes is not None and catalogue.totals(conn, u)[0] == 2


@pytest.fixture(scope="module")
def tx_bouncer(pg_server) -> Iterator[pgbouncer.Pgbouncer]:
    with pgbouncer.started(pg_server.host, pg_server.port, "transaction") as b:
        yield b


def test_a_plain_set_leaks_to_the_next_client_under_transaction_pooling(tx_bouncer, dsn, conn):
    bouncer = tx_bouncer
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=1)
    with psycopg.connect(bouncer.route(dsn), autocommit=True, prepare_threshold=None) as first:
        first.execute("SET ue_resync.mode = 'off'")  # lands on a server connection, stays there
    with psycopg.connect(bouncer.route(dsn), autocommit=True, prepare_threshold=None) as second:
        # pgbouncer hands back the server connection used last (LIFO): the first client's.
        second.execute("UPDATE course_unit_elements SET credits = 2 WHERE id = %s", (e,))
        leaked = second.execute("SELECT current_setting('ue_resync.mode', true)").fetchone()[0]
    assert leaked == "off"
    assert catalogue.totals(conn, u)[0] == 1  # not synced: the other client's mode applied
    assert catalogue.drift_count(conn) == 1
