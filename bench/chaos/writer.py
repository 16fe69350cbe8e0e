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
Before each COMMIT the transaction is written as {"pending": {...}}; the line that follows says
how it ended (its record, or {"rolled_back": 1}): a writer that crashes while committing leaves
the pending line last, which the run reads as an unknown outcome.
The last line is {"summary": {...}} with the writer's counters.

The run's side: `slot` starts a writer (support.processes.Slot: started again in the same slot
after a crash, each start with files of its own), `records` reads what every start wrote."""

from __future__ import annotations

import faulthandler
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors

from bench.chaos import operations
from support.env import ROOT
from support.processes import Slot, spawn
from ue_resync.db import is_connection_loss

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
        self.choices = operations.Choices(
            self.rng, config["units"], config["hot"], config["poison"], config["elements"]
        )
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
            if changes:
                pending = {"s": began, "b": before_commit, "m": mode, "c": changes}
                self.out.write(json.dumps({"pending": pending}) + "\n")
            conn.commit()
        except psycopg.Error as exc:
            lost = is_connection_loss(exc) or conn.broken
            if before_commit and lost:
                # The COMMIT was sent and the connection died: it may or may not have landed.
                self.record(began, before_commit, time.time(), mode, changes, ambiguous=True)
            elif before_commit and changes:
                self.out.write(json.dumps({"rolled_back": 1}) + "\n")
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
        old_units: Sequence[int] = (),
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

    def mixed(self, conn: psycopg.Connection, changes: list[list[int]]) -> str:
        mode = self.rng.choices(MODES, MODE_WEIGHTS)[0]
        self.set_mode(conn, mode)
        for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
            statement = operations.pick(self.choices, conn, self.catalogue_size(conn))
            if statement is not None:
                self.stmt(conn, changes, mode, *statement)
        return mode

    def catalogue_size(self, conn: psycopg.Connection) -> int:
        """The number of elements, read every 100 operations (the writers keep it near its
        starting size: inserts become deletes above 1.5×, deletes become inserts below 0.5×)."""
        self.ops += 1
        if self.ops % 100 == 1:
            self.size = int(conn.execute("SELECT count(*) FROM course_unit_elements").fetchone()[0])
        return self.size

    def locker(self, conn: psycopg.Connection, changes: list[list[int]]) -> str:
        some = sorted({self.choices.a_unit() for _ in range(self.rng.randint(1, 3))})
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
        first, second = self.rng.sample(self.choices.hot, 2)
        for n, u in enumerate((first, second)):
            picked = operations.lock_elements(conn, "course_unit_id = %s", (u,))
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


# -- the run's side --


def slot(index: int, kind: str, config: dict[str, Any], workdir: Path) -> Slot:
    """Writer `index` of `kind` ("writer 0 (mixed)"), not started yet. Start n writes its records
    beside its log (writer-0-mixed.n.jsonl next to writer-0-mixed.n.log, its stderr) and is
    seeded apart from the starts before it."""

    def start(log: Path, n: int) -> subprocess.Popen[bytes]:
        out = log.with_suffix(".jsonl")
        start_config = {**config, "kind": kind, "out": str(out), "seed": config["seed"] * 10 + n}
        command = (sys.executable, "-m", "bench.chaos.writer")
        return spawn(None, json.dumps(start_config), cwd=ROOT, log=log, command=command)

    return Slot(f"writer {index} ({kind})", workdir, start)


def outputs(writer: Slot) -> list[Path]:
    """The record files of every start of `writer`, the current one last."""
    return [log.with_suffix(".jsonl") for log in writer.logs]


def wrote_summary(writer: Slot) -> bool:
    """Whether the current start ended on its summary (it stopped on SIGTERM, as it should)."""
    out = outputs(writer)[-1]
    lines = out.read_text().splitlines() if out.exists() else []
    return bool(lines) and '"summary"' in lines[-1]


def records(outs: Sequence[Path]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every start's committed (and unknown-outcome) transactions, and their summaries added up.
    A start that crashed may end on a transaction it was committing ("pending": its outcome
    unknown) or on half a line (dropped)."""
    lines: list[dict[str, Any]] = []
    summary: Counter[str] = Counter()
    for out in outs:
        pending = None
        for line in out.read_text().splitlines() if out.exists() else []:
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue  # the half line a crash left
            pending = data.get("pending")  # any later line says how that COMMIT ended
            if "summary" in data:
                summary.update(data["summary"])
            elif pending is None and "rolled_back" not in data:
                lines.append(data)
        if pending is not None:
            lines.append({**pending, "t": pending["b"], "a": 1})
    return lines, dict(summary)


def main() -> None:
    # A writer killed by a signal of its own (a crash in libpq, say) leaves its Python stack in
    # its log instead of nothing.
    faulthandler.enable()
    writer = Writer(json.loads(sys.argv[1]))

    def stop(*_: object) -> None:
        writer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    writer.run()


if __name__ == "__main__":
    main()
