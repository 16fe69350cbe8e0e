"""Logical replication between two real servers (the suite's own major version: the system
PostgreSQL's binaries with UE_RESYNC_TEST_DSN, the embedded wheel's otherwise), in the two set-ups
docs/operations.md describes: the subscriber receives the UEs as the publisher computed them, or
it computes its own (its replica triggers fire for the apply worker). Every write path on the
publisher ends with no drift on the subscriber, moves and TRUNCATE included, across an upgrade of
ue-resync on the subscriber."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from support import catalogue, replication
from support.poll import wait_for
from ue_resync import installation, migrate

pytestmark = [pytest.mark.e2e, pytest.mark.other_programs]

DB = "app"
ROWS = "SELECT * FROM {} ORDER BY id"


@pytest.fixture
def nodes(bindir: Path) -> Iterator[tuple[replication.Node, replication.Node]]:
    """A publisher and a subscriber, each with the application's tables and ue-resync."""
    with replication.servers(bindir, 2, wal_level="logical") as (publisher, subscriber):
        for node in (publisher, subscriber):
            with node.connect() as admin:
                admin.execute(f"CREATE DATABASE {DB}")
            with node.connect(DB) as conn:
                catalogue.install(conn)
        yield publisher, subscriber


def subscribe(publisher: replication.Node, subscriber: replication.Node, units: str) -> None:
    """The elements with every change; the UEs with `units` (publish option)."""
    with publisher.connect(DB) as pub:
        pub.execute("CREATE PUBLICATION elements FOR TABLE course_unit_elements")
        pub.execute(f"CREATE PUBLICATION units FOR TABLE course_units WITH (publish = '{units}')")
    with subscriber.connect(DB) as sub:
        sub.execute(
            f"CREATE SUBSCRIPTION catalogue CONNECTION '{publisher.dsn(DB)}' "
            "PUBLICATION elements, units"
        )
        # Each table's initial copy is its own worker: until both are ready, the elements may
        # arrive before the UEs they belong to.
        wait_for(
            lambda: sub.execute(
                "SELECT count(*) = 2 AND bool_and(srsubstate = 'r') FROM pg_subscription_rel"
            ).fetchone()[0],
            30,
            "the subscription's initial copy of both tables",
        )


def caught_up(publisher: replication.Node, subscriber: replication.Node) -> None:
    """Until the subscriber holds the publisher's elements (its UEs are synced in the same
    applied transactions)."""
    with publisher.connect(DB) as pub, subscriber.connect(DB) as sub:
        expected = pub.execute(ROWS.format("course_unit_elements")).fetchall()
        wait_for(
            lambda: sub.execute(ROWS.format("course_unit_elements")).fetchall() == expected,
            30,
            "the subscriber to apply the publisher's changes",
        )


def every_write_path(conn: psycopg.Connection) -> list[int]:
    """Each kind of write an application makes, on the publisher; the UEs involved."""
    a, b, c = (catalogue.unit(conn) for _ in range(3))
    e1 = catalogue.element(conn, a, credits=2)
    e2 = catalogue.element(conn, a, credits=3)
    catalogue.element(conn, b, credits=1)
    conn.execute("UPDATE course_unit_elements SET hours_cm = 7 WHERE id = %s", (e1,))
    conn.execute("UPDATE course_unit_elements SET status = 'inactive' WHERE id = %s", (e2,))
    conn.execute("UPDATE course_unit_elements SET deleted_at = now() WHERE id = %s", (e1,))
    conn.execute("UPDATE course_unit_elements SET deleted_at = NULL WHERE id = %s", (e1,))
    conn.execute("UPDATE course_unit_elements SET course_unit_id = %s WHERE id = %s", (c, e1))
    conn.execute("DELETE FROM course_unit_elements WHERE id = %s", (e2,))
    conn.execute(
        "INSERT INTO course_unit_elements (course_unit_id, code, name, credits) "
        "SELECT u, 'bulk', 'bulk', 1 FROM unnest(%s::bigint[]) u, generate_series(1, 3)",
        ([a, b, c],),
    )
    # The moves of a whole UE's elements in one statement.
    conn.execute(
        "UPDATE course_unit_elements SET course_unit_id = %s WHERE course_unit_id = %s", (b, a)
    )
    conn.execute(
        "UPDATE course_unit_elements SET credits = credits + 1 WHERE course_unit_id = %s", (c,)
    )
    conn.execute(
        "DELETE FROM course_unit_elements WHERE course_unit_id = %s AND code = 'bulk' "
        "AND id = (SELECT max(id) FROM course_unit_elements WHERE course_unit_id = %s)",
        (b, b),
    )
    return [a, b, c]


def totals(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT id, credits, hours_cm, hours_total, elements_count FROM course_units ORDER BY id"
    ).fetchall()


def test_a_subscriber_that_computes_its_own_units(nodes):
    publisher, subscriber = nodes
    # Only the UEs' rows arrive, not their totals: the subscriber's replica triggers compute
    # them, as installed.
    subscribe(publisher, subscriber, units="insert, delete, truncate")
    with publisher.connect(DB) as pub:
        units = every_write_path(pub)
        expected = totals(pub)
    caught_up(publisher, subscriber)
    with subscriber.connect(DB) as sub:
        assert sub.execute("SELECT course_unit_id, differences FROM resync.drift").fetchall() == []
        assert totals(sub) == expected
        assert catalogue.jobs(sub) == []

        # An upgrade of ue-resync on the subscriber keeps the replica triggers as they were.
        sub.execute("UPDATE resync.schema_definitions SET checksum = 'old'")
        migrate.apply(sub)
        assert installation.verify(sub) == []
    with publisher.connect(DB) as pub:
        pub.execute(
            "UPDATE course_unit_elements SET course_unit_id = %s WHERE course_unit_id = %s",
            (units[0], units[1]),
        )
        pub.execute(
            "UPDATE course_unit_elements SET hours_cm = 3 WHERE course_unit_id = %s", (units[2],)
        )
        expected = totals(pub)
    caught_up(publisher, subscriber)
    with subscriber.connect(DB) as sub:
        assert sub.execute("SELECT count(*) FROM resync.drift").fetchone() == (0,)
        assert totals(sub) == expected
    with publisher.connect(DB) as pub:
        pub.execute("TRUNCATE course_unit_elements")
    with subscriber.connect(DB) as sub:
        wait_for(
            lambda: sub.execute("SELECT count(*) FROM course_unit_elements").fetchone() == (0,),
            30,
            "the subscriber to apply the TRUNCATE",
        )
        assert sub.execute("SELECT count(*) FROM resync.drift").fetchone() == (0,)
        assert {row[4] for row in totals(sub)} == {0}


def test_a_subscriber_that_receives_the_units(nodes):
    publisher, subscriber = nodes
    # Both tables whole: the publisher's triggers compute, the subscriber's stay as installed
    # (they do not fire for an apply worker) and receive the result.
    subscribe(publisher, subscriber, units="insert, update, delete, truncate")
    with publisher.connect(DB) as pub:
        every_write_path(pub)
        expected = totals(pub)
    caught_up(publisher, subscriber)
    with subscriber.connect(DB) as sub:
        wait_for(lambda: totals(sub) == expected, 30, "the subscriber to apply the UEs")
        assert sub.execute("SELECT count(*) FROM resync.drift").fetchone() == (0,)
        assert catalogue.jobs(sub) == []
