"""The element operations a chaos writer of kind mixed or rr picks from, by weight: one row's
insert, update of a counted field, move, soft delete, restore and hard delete, and the bulk
statements (update, insert, soft-delete toggle, move, delete). Each builds its statement (after
locking the rows it picked, as an ORM does) from what the writer may touch (`Choices`); the
writer (bench/chaos/writer.py) runs it and records the UEs touched."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

FIELDS = ("credits", "hours_cm", "hours_td", "hours_tp", "hours_total", "status")
WEIGHTS = {
    "insert": 8,
    "update": 30,
    "move": 8,
    "soft_delete": 6,
    "restore": 6,
    "hard_delete": 8,
    "bulk_update": 4,
    "bulk_insert": 2,
    "bulk_toggle": 3,
    "bulk_move": 2,
    "bulk_delete": 2,
}

# What the writer runs: (operation as counted, query, parameters, UEs a move or delete leaves).
Statement = tuple[str, str, Any, Sequence[int]]


@dataclasses.dataclass
class Choices:
    """What a writer picks from: its random generator, the UEs it may touch (the hot ones more
    often), the poison UE (never bulk-deleted from) and the catalogue's starting size."""

    rng: random.Random
    units: list[int]
    hot: list[int]
    poison: int
    elements: int

    def a_unit(self) -> int:
        return self.rng.choice(self.hot) if self.rng.random() < 0.3 else self.rng.choice(self.units)


def pick(c: Choices, conn: psycopg.Connection, size: int) -> Statement | None:
    """One operation, picked by weight, and its statement (None when it found no row to work
    on). The catalogue's `size` is kept near its start: inserts become deletes above 1.5× and
    deletes inserts below 0.5×."""
    op = c.rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
    if size > 1.5 * c.elements and op in ("insert", "bulk_insert"):
        op = "hard_delete" if op == "insert" else "bulk_delete"
    elif size < 0.5 * c.elements and op in ("hard_delete", "bulk_delete"):
        op = "insert" if op == "hard_delete" else "bulk_insert"
    return OPERATIONS.get(op, one_element)(c, conn, op, c.a_unit())


def lock_elements(
    conn: psycopg.Connection, where: str, params: Any, k: int = 1
) -> list[tuple[int, int]]:
    """Pick up to k elements matching `where` and lock them (as an ORM loads the model it
    saves): their ids and current UEs."""
    return conn.execute(
        "SELECT id, course_unit_id FROM course_unit_elements WHERE id IN ("
        f"  SELECT id FROM course_unit_elements WHERE {where} ORDER BY random() LIMIT {k}"
        ") ORDER BY id FOR UPDATE",
        params,
    ).fetchall()


def values(rng: random.Random) -> tuple[float, ...]:
    """(credits, cm, td, tp, total) of a new element. Floats only: psycopg will not dump a list
    mixing int and float (the bulk insert)."""
    cm, td, tp = (
        rng.choice((0.0, 6.0, 10.0, 12.0)),
        rng.choice((0.0, 4.0, 8.0, 10.0)),
        rng.choice((0.0, 2.0, 6.0)),
    )
    return (rng.choice((0.0, 1.0, 1.5, 2.0, 3.0, 4.0)), cm, td, tp, cm + td + tp)


def insert(c: Choices, conn: psycopg.Connection, op: str, u: int) -> Statement | None:
    return (
        op,
        "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, "
        "hours_cm, hours_td, hours_tp, hours_total) VALUES (%s, %s, 'chaos', %s, %s, %s, "
        "%s, %s) RETURNING course_unit_id",
        (u, f"W{c.rng.randrange(10**9)}", *values(c.rng)),
        (),
    )


# One element of UE u, locked first as an ORM loads the model it saves: the statement by op.
ONE_ELEMENT = {
    "move": "UPDATE course_unit_elements SET course_unit_id = %s WHERE id = %s "
    "AND course_unit_id <> %s RETURNING course_unit_id",
    "soft_delete": "UPDATE course_unit_elements SET deleted_at = now() WHERE id = %s "
    "RETURNING course_unit_id",
    "restore": "UPDATE course_unit_elements SET deleted_at = NULL WHERE id = %s "
    "RETURNING course_unit_id",
    "hard_delete": "DELETE FROM course_unit_elements WHERE id = %s RETURNING course_unit_id",
}


def one_element(c: Choices, conn: psycopg.Connection, op: str, u: int) -> Statement | None:
    """update (of one counted field), move, soft_delete, restore or hard_delete."""
    rng = c.rng
    where = {
        "soft_delete": "course_unit_id = %s AND deleted_at IS NULL",
        "restore": "course_unit_id = %s AND deleted_at IS NOT NULL",
    }.get(op, "course_unit_id = %s")
    picked = lock_elements(conn, where, (u,))
    if not picked:
        return None
    ((eid, old),) = picked
    if op == "update":
        field = rng.choice(FIELDS)
        value: Any = (
            rng.choice(("active", "inactive", "active"))
            if field == "status"
            else rng.choice((0, 0.5, 1, 2, 3, 4.5, 6))
            if field == "credits"
            else rng.choice((0, 2, 4.5, 8, 10, 12, 16, 24))
        )
        return (
            f"update_{field}",
            # Only a real change: a statement that changes no counted field syncs nothing and
            # queues nothing, by design.
            f"UPDATE course_unit_elements SET {field} = %s, updated_at = now() "
            f"WHERE id = %s AND {field} IS DISTINCT FROM %s RETURNING course_unit_id",
            (value, eid, value),
            [old],
        )
    params: tuple[Any, ...] = (eid,)
    if op == "move":
        target = rng.choice(c.units)
        params = (target, eid, target)
    return (op, ONE_ELEMENT[op], params, [old])


def bulk_update(c: Choices, conn: psycopg.Connection, op: str, u: int) -> Statement | None:
    some = c.rng.sample(c.units, c.rng.randint(2, 10))
    return (
        op,
        "UPDATE course_unit_elements SET hours_td = (hours_td + 1) %% 40 "
        "WHERE course_unit_id = ANY(%s) RETURNING course_unit_id",
        (some,),
        (),
    )


def bulk_insert(c: Choices, conn: psycopg.Connection, op: str, u: int) -> Statement | None:
    rng = c.rng
    n = rng.randint(5, 25)
    owners = [c.a_unit() for _ in range(rng.randint(1, 4))]
    rows = [(rng.choice(owners), f"B{rng.randrange(10**9)}", *values(rng)) for _ in range(n)]
    return (
        op,
        "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, "
        "hours_cm, hours_td, hours_tp, hours_total) "
        "SELECT u, c, 'chaos bulk', cr, cm, td, tp, tot "
        "FROM unnest(%s::bigint[], %s::text[], %s::numeric[], %s::numeric[], "
        "%s::numeric[], %s::numeric[], %s::numeric[]) AS r(u, c, cr, cm, td, tp, tot) "
        "RETURNING course_unit_id",
        tuple(list(col) for col in zip(*rows, strict=True)),
        (),
    )


def bulk_toggle(c: Choices, conn: psycopg.Connection, op: str, u: int) -> Statement | None:
    return (
        op,
        "UPDATE course_unit_elements "
        "SET deleted_at = CASE WHEN deleted_at IS NULL THEN now() END "
        "WHERE id IN (SELECT id FROM course_unit_elements WHERE course_unit_id = %s "
        "  ORDER BY id FOR UPDATE) AND random() < 0.4 RETURNING course_unit_id",
        (u,),
        (),
    )


def bulk_move(c: Choices, conn: psycopg.Connection, op: str, u: int) -> Statement | None:
    picked = lock_elements(conn, "course_unit_id = %s", (u,), k=c.rng.randint(2, 6))
    if picked:
        target = c.rng.choice(c.units)
        return (
            op,
            "UPDATE course_unit_elements SET course_unit_id = %s WHERE id = ANY(%s) "
            "AND course_unit_id <> %s RETURNING course_unit_id",
            (target, [p[0] for p in picked], target),
            [p[1] for p in picked],
        )
    return None


def bulk_delete(c: Choices, conn: psycopg.Connection, op: str, u: int) -> Statement | None:
    """Keeps the catalogue's size steady against the bulk inserts; never the poison UE's."""
    picked = lock_elements(conn, "course_unit_id <> %s", (c.poison,), k=c.rng.randint(5, 25))
    if picked:
        return (
            op,
            "DELETE FROM course_unit_elements WHERE id = ANY(%s) RETURNING course_unit_id",
            ([p[0] for p in picked],),
            [p[1] for p in picked],
        )
    return None


Operation = Callable[[Choices, psycopg.Connection, str, int], Statement | None]
# The rest (update, move, soft_delete, restore, hard_delete): one_element.
OPERATIONS: dict[str, Operation] = {
    "insert": insert,
    "bulk_update": bulk_update,
    "bulk_insert": bulk_insert,
    "bulk_toggle": bulk_toggle,
    "bulk_move": bulk_move,
    "bulk_delete": bulk_delete,
}
