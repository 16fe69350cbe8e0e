"""A chaos writer: `python -m bench.chaos.writer CONFIG_JSON`, until SIGTERM.

Kinds:
  mixed     random element operations (insert, update of each counted field, move, soft
            delete, restore, hard delete, bulk statements), 1–3 per transaction, each
            transaction in a random trigger mode (inline 70 %, deferred 20 %, off 10 %)
  rr        the same in REPEATABLE READ
  locker    holds 1–3 UE rows (mostly hot ones) FOR UPDATE for 100–500 ms: the inline syncs
            that need them time out and defer
  deadlock  updates an element of one hot UE, then of another, in a random order, with a lock
            wait long enough (ue_resync.lock_timeout 3 s, deadlock_timeout 50 ms) for two of
            them to deadlock inside the trigger's sync: a real 40P01, deferred

Every committed statement is recorded for the run's analysis, one JSON line per transaction in
the output file: {"b": time before COMMIT, "t": time COMMIT returned, "s": transaction start,
"m": mode, "c": [[unit, deferred], ...]} where `deferred` is 1 when the statement's inline sync
failed (the trigger's WARNING reached us) or the mode queued a job, and 0 when it synced inline.
A COMMIT whose outcome is unknown (the connection died during it) is written with "a": 1.
The last line is {"summary": {...}} with the writer's counters."""

from __future__ import annotations

import json
import random
import signal
import sys
import time
from collections import Counter
from typing import Any

import psycopg
from psycopg import errors

from ue_resync.db import is_connection_loss

FIELDS = ("credits", "hours_cm", "hours_td", "hours_tp", "hours_total", "status")
WARNING = "ue-resync: sync of"
MODES = ("inline", "deferred", "off")
MODE_WEIGHTS = (70, 20, 10)


class Stop(Exception):
    pass


class Writer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = config
        self.kind: str = config["kind"]
        self.rng = random.Random(config["seed"])
        self.units: list[int] = config["units"]
        self.hot: list[int] = config["hot"]
        self.out = open(config["out"], "w", buffering=1)  # noqa: SIM115 - open for its life
        self.stopping = False
        self.counts: Counter[str] = Counter()
        self.warnings = 0
        self.conn: psycopg.Connection | None = None
        self.may_set_deadlock_timeout = True
        self.ops = 0
        self.size = 0

    # -- connection --

    def connect(self) -> psycopg.Connection:
        delay = 0.1
        while not self.stopping:
            try:
                conn = psycopg.connect(
                    self.cfg["dsn"],
                    connect_timeout=5,
                    application_name=f"chaos writer {self.kind}",
                )
                conn.add_notice_handler(self._notice)
                if self.kind == "rr":
                    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                return conn
            except psycopg.OperationalError:
                self.counts["reconnect_failures"] += 1
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise Stop

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if (diag.message_primary or "").startswith(WARNING):
            self.warnings += 1

    # -- the loop --

    def run(self) -> None:
        body = {
            "mixed": self.mixed,
            "rr": self.mixed,
            "locker": self.locker,
            "deadlock": self.deadlock,
        }[self.kind]
        try:
            while not self.stopping:
                if self.conn is None or self.conn.closed:
                    self.conn = self.connect()
                    self.counts["connections"] += 1
                self.transaction(body)
                self.pause(self.cfg.get("pause", 0.01))
        except Stop:
            pass
        finally:
            self.out.write(json.dumps({"summary": dict(self.counts)}) + "\n")
            self.out.close()
            if self.conn is not None:
                self.conn.close()

    def pause(self, seconds: float) -> None:
        time.sleep(self.rng.uniform(0, 2 * seconds))

    def transaction(self, body: Any) -> None:
        conn = self.conn
        assert conn is not None
        changes: list[list[int]] = []
        mode = "inline"
        began = time.time()
        before_commit = 0.0
        try:
            mode = body(conn, changes)
            before_commit = time.time()
            conn.commit()
        except psycopg.Error as exc:
            lost = is_connection_loss(exc) or conn.broken
            if before_commit and lost:
                # The COMMIT was sent and the connection died: it may or may not have landed.
                self.record(began, before_commit, time.time(), mode, changes, ambiguous=True)
            label = exc.sqlstate or ("connection" if lost else f"client_{type(exc).__name__}")
            self.counts[f"aborted_{label}"] += 1
            if lost:
                self.counts["connection_lost"] += 1
                conn.close()
                self.conn = None
            else:
                conn.rollback()
            return
        self.counts["transactions"] += 1
        self.counts[f"mode_{mode}"] += 1
        self.record(began, before_commit, time.time(), mode, changes)

    def record(
        self,
        began: float,
        before: float,
        after: float,
        mode: str,
        changes: list[list[int]],
        ambiguous: bool = False,
    ) -> None:
        if not changes:
            return
        line: dict[str, Any] = {"s": began, "b": before, "t": after, "m": mode, "c": changes}
        if ambiguous:
            line["a"] = 1
        else:
            self.counts["statements"] += len({c[2] for c in changes})
            self.counts["rows"] += sum(c[3] for c in changes)
        self.out.write(json.dumps(line) + "\n")

    # -- statements --

    def stmt(
        self,
        conn: psycopg.Connection,
        changes: list[list[int]],
        mode: str,
        op: str,
        query: str,
        params: Any,
        old_units: list[int] | tuple[int, ...] = (),
    ) -> int:
        """Run one element statement that RETURNs course_unit_id; record the UEs it touched
        (with `old_units`, those a move left), and whether its sync deferred."""
        seen = self.warnings
        rows = conn.execute(query, params).fetchall()
        if not rows:
            return 0
        deferred = 1 if (mode != "inline" or self.warnings > seen) else 0
        if mode == "off":
            deferred = 2  # nothing synced, nothing queued
        touched = {r[0] for r in rows if r[0] is not None} | {u for u in old_units if u}
        n = len({c[2] for c in changes})
        for u in sorted(touched):
            # [unit, deferred, statement number in the transaction, rows (on the first unit)]
            changes.append([u, deferred, n, len(rows) if u == min(touched) else 0])
        self.counts[f"op_{op}"] += 1
        if deferred == 1 and mode == "inline":
            self.counts["inline_deferred"] += 1
        return len(rows)

    def set_mode(self, conn: psycopg.Connection, mode: str) -> None:
        conn.execute("SELECT set_config('ue_resync.mode', %s, true)", (mode,))

    def a_unit(self) -> int:
        return self.rng.choice(self.hot) if self.rng.random() < 0.3 else self.rng.choice(self.units)

    def lock_elements(
        self, conn: psycopg.Connection, where: str, params: Any, k: int = 1
    ) -> list[tuple[int, int]]:
        """Pick up to k elements matching `where` and lock them (as an ORM loads the model it
        saves): their ids and current UEs."""
        return conn.execute(
            "SELECT id, course_unit_id FROM course_unit_elements WHERE id IN ("
            f"  SELECT id FROM course_unit_elements WHERE {where} ORDER BY random() LIMIT {k}"
            ") ORDER BY id FOR UPDATE",
            params,
        ).fetchall()

    def mixed(self, conn: psycopg.Connection, changes: list[list[int]]) -> str:
        mode = self.rng.choices(MODES, MODE_WEIGHTS)[0]
        self.set_mode(conn, mode)
        for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
            self.operation(conn, changes, mode)
        return mode

    def catalogue_size(self, conn: psycopg.Connection) -> int:
        """The number of elements, read every 100 operations (the writers keep it near its
        starting size: inserts become deletes above 1.5×, deletes become inserts below 0.5×)."""
        self.ops += 1
        if self.ops % 100 == 1:
            self.size = int(conn.execute("SELECT count(*) FROM course_unit_elements").fetchone()[0])
        return self.size

    def operation(self, conn: psycopg.Connection, changes: list[list[int]], mode: str) -> None:
        rng = self.rng
        size, target = self.catalogue_size(conn), self.cfg["elements"]
        op = rng.choices(
            [
                "insert",
                "update",
                "move",
                "soft_delete",
                "restore",
                "hard_delete",
                "bulk_update",
                "bulk_insert",
                "bulk_toggle",
                "bulk_move",
                "bulk_delete",
            ],
            [8, 30, 8, 6, 6, 8, 4, 2, 3, 2, 2],
        )[0]
        if size > 1.5 * target and op in ("insert", "bulk_insert"):
            op = "hard_delete" if op == "insert" else "bulk_delete"
        elif size < 0.5 * target and op in ("hard_delete", "bulk_delete"):
            op = "insert" if op == "hard_delete" else "bulk_insert"
        u = self.a_unit()
        if op == "insert":
            self.stmt(
                conn,
                changes,
                mode,
                op,
                "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, "
                "hours_cm, hours_td, hours_tp, hours_total) VALUES (%s, %s, 'chaos', %s, %s, %s, "
                "%s, %s) RETURNING course_unit_id",
                (u, f"W{rng.randrange(10**9)}", *self.values()),
            )
        elif op in ("update", "move", "soft_delete", "restore", "hard_delete"):
            where = {
                "soft_delete": "course_unit_id = %s AND deleted_at IS NULL",
                "restore": "course_unit_id = %s AND deleted_at IS NOT NULL",
            }.get(op, "course_unit_id = %s")
            picked = self.lock_elements(conn, where, (u,))
            if not picked:
                return
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
                self.stmt(
                    conn,
                    changes,
                    mode,
                    f"update_{field}",
                    # Only a real change: a statement that changes no counted field syncs
                    # nothing and queues nothing, by design.
                    f"UPDATE course_unit_elements SET {field} = %s, updated_at = now() "
                    f"WHERE id = %s AND {field} IS DISTINCT FROM %s RETURNING course_unit_id",
                    (value, eid, value),
                    [old],
                )
            elif op == "move":
                self.stmt(
                    conn,
                    changes,
                    mode,
                    op,
                    "UPDATE course_unit_elements SET course_unit_id = %s WHERE id = %s "
                    "AND course_unit_id <> %s RETURNING course_unit_id",
                    (target := rng.choice(self.units), eid, target),
                    [old],
                )
            elif op == "soft_delete":
                self.stmt(
                    conn,
                    changes,
                    mode,
                    op,
                    "UPDATE course_unit_elements SET deleted_at = now() WHERE id = %s "
                    "RETURNING course_unit_id",
                    (eid,),
                    [old],
                )
            elif op == "restore":
                self.stmt(
                    conn,
                    changes,
                    mode,
                    op,
                    "UPDATE course_unit_elements SET deleted_at = NULL WHERE id = %s "
                    "RETURNING course_unit_id",
                    (eid,),
                    [old],
                )
            else:
                self.stmt(
                    conn,
                    changes,
                    mode,
                    op,
                    "DELETE FROM course_unit_elements WHERE id = %s RETURNING course_unit_id",
                    (eid,),
                    [old],
                )
        elif op == "bulk_update":
            some = rng.sample(self.units, rng.randint(2, 10))
            self.stmt(
                conn,
                changes,
                mode,
                op,
                "UPDATE course_unit_elements SET hours_td = (hours_td + 1) %% 40 "
                "WHERE course_unit_id = ANY(%s) RETURNING course_unit_id",
                (some,),
            )
        elif op == "bulk_insert":
            n = rng.randint(5, 25)
            owners = [self.a_unit() for _ in range(rng.randint(1, 4))]
            rows = [
                (rng.choice(owners), f"B{rng.randrange(10**9)}", *self.values()) for _ in range(n)
            ]
            self.stmt(
                conn,
                changes,
                mode,
                op,
                "INSERT INTO course_unit_elements (course_unit_id, code, name, credits, "
                "hours_cm, hours_td, hours_tp, hours_total) "
                "SELECT u, c, 'chaos bulk', cr, cm, td, tp, tot "
                "FROM unnest(%s::bigint[], %s::text[], %s::numeric[], %s::numeric[], "
                "%s::numeric[], %s::numeric[], %s::numeric[]) AS r(u, c, cr, cm, td, tp, tot) "
                "RETURNING course_unit_id",
                tuple(list(col) for col in zip(*rows, strict=True)),
            )
        elif op == "bulk_toggle":
            self.stmt(
                conn,
                changes,
                mode,
                op,
                "UPDATE course_unit_elements "
                "SET deleted_at = CASE WHEN deleted_at IS NULL THEN now() END "
                "WHERE id IN (SELECT id FROM course_unit_elements WHERE course_unit_id = %s "
                "  ORDER BY id FOR UPDATE) AND random() < 0.4 RETURNING course_unit_id",
                (u,),
            )
        elif op == "bulk_move":
            picked = self.lock_elements(conn, "course_unit_id = %s", (u,), k=rng.randint(2, 6))
            if picked:
                self.stmt(
                    conn,
                    changes,
                    mode,
                    op,
                    "UPDATE course_unit_elements SET course_unit_id = %s WHERE id = ANY(%s) "
                    "AND course_unit_id <> %s RETURNING course_unit_id",
                    (target := rng.choice(self.units), [p[0] for p in picked], target),
                    [p[1] for p in picked],
                )
        else:  # bulk_delete: keeps the catalogue's size steady against the bulk inserts
            picked = self.lock_elements(
                conn, "course_unit_id <> %s", (self.cfg["poison"],), k=rng.randint(5, 25)
            )
            if picked:
                self.stmt(
                    conn,
                    changes,
                    mode,
                    op,
                    "DELETE FROM course_unit_elements WHERE id = ANY(%s) RETURNING course_unit_id",
                    ([p[0] for p in picked],),
                    [p[1] for p in picked],
                )

    def values(self) -> tuple[float, ...]:
        # Floats only: psycopg will not dump a list mixing int and float (the bulk insert).
        rng = self.rng
        cm, td, tp = (
            rng.choice((0.0, 6.0, 10.0, 12.0)),
            rng.choice((0.0, 4.0, 8.0, 10.0)),
            rng.choice((0.0, 2.0, 6.0)),
        )
        return (rng.choice((0.0, 1.0, 1.5, 2.0, 3.0, 4.0)), cm, td, tp, cm + td + tp)

    def locker(self, conn: psycopg.Connection, changes: list[list[int]]) -> str:
        some = sorted({self.a_unit() for _ in range(self.rng.randint(1, 3))})
        conn.execute(
            "SELECT 1 FROM course_units WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (some,)
        )
        self.counts["locks_held"] += 1
        time.sleep(self.rng.uniform(0.1, 0.5))
        return "inline"

    def deadlock(self, conn: psycopg.Connection, changes: list[list[int]]) -> str:
        if self.may_set_deadlock_timeout:
            try:
                conn.execute("SELECT set_config('deadlock_timeout', '50ms', true)")
            except errors.InsufficientPrivilege:
                # Not a superuser: the server's deadlock_timeout (1 s by default) it is.
                self.may_set_deadlock_timeout = False
                conn.rollback()
        conn.execute("SELECT set_config('ue_resync.lock_timeout', '3s', true)")
        first, second = self.rng.sample(self.hot, 2)
        for n, u in enumerate((first, second)):
            picked = self.lock_elements(conn, "course_unit_id = %s", (u,))
            if not picked:
                continue
            ((eid, old),) = picked
            self.stmt(
                conn,
                changes,
                "inline",
                "deadlock_pair",
                "UPDATE course_unit_elements SET hours_tp = (hours_tp + 0.5) %% 20 WHERE id = %s "
                "RETURNING course_unit_id",
                (eid,),
                [old],
            )
            if n == 0:
                time.sleep(self.rng.uniform(0.02, 0.08))
        return "inline"


def main() -> None:
    writer = Writer(json.loads(sys.argv[1]))

    def stop(*_: object) -> None:
        writer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    writer.run()


if __name__ == "__main__":
    main()
