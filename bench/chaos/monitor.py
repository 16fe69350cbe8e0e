"""What a chaos run watches while the chaos lasts, and how it speaks.

`Reporter`: every line the run prints, at once, and the failures and notes it gathers for the
report. `Monitor`, four times a second: a daemon that exited on its own fails the run (and is
started again); a writer killed by a signal (a crash of the client library, say: nothing of
ue-resync runs in it) is started again, twice per slot at most, any other end of a writer fails
the run; the queue is sampled (the longest wait of a due job, the oldest heartbeat of a picked
one, the most jobs queued, the catalogue's size); and every 30 s a progress line."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable

import psycopg

from bench.chaos import checks, writer
from support.processes import Slot


@dataclasses.dataclass
class Reporter:
    failures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, flush=True)

    def fail(self, assertion: str, detail: str) -> None:
        """An assertion of the run failed: printed now, and listed in the report."""
        self.failures.append(f"{assertion}: {detail}")
        self.say(f"FAILED: {assertion}: {detail}")


class Monitor:
    def __init__(self, out: Reporter, connect: Callable[[], psycopg.Connection]) -> None:
        self.out = out
        self.connect = connect
        self.conn: psycopg.Connection | None = None
        self.samples: Counter[str] = Counter()
        self.crashes: list[str] = []  # "writer 0 (mixed) killed by SIGSEGV, …", each restarted
        self.max_due_wait = 0.0
        self.max_picked_age = 0.0
        self.max_queued = 0
        self.elements_seen = (10**9, 0)

    def tick(self, daemons: list[Slot], writers: list[Slot]) -> None:
        """Notice a daemon or a writer that ended on its own; sample the queue."""
        for d in daemons:
            if d.proc is not None and not d.alive() and not d.expected_exit:
                self.out.fail(
                    "daemons stay up",
                    f"{d.label} exited {d.proc.returncode} on its own:\n{d.tail()}",
                )
                self.samples[f"unexpected exits {d.label}"] += 1
                if self.samples[f"unexpected exits {d.label}"] >= 3:
                    # A daemon that cannot start (e.g. the code on disk changed under the run
                    # and wants a newer schema) would be restarted four times a second.
                    raise RuntimeError(f"{d.label} keeps exiting:\n{d.tail()}")
                d.start()
        for w in writers:
            if not w.alive():
                self.writer_ended(w)
        self.sample()

    def writer_ended(self, w: Slot) -> None:
        """A writer ended on its own. Killed by a signal, it is started again, up to twice per
        slot, and the crash is reported; its COMMIT in flight, if any, counts as of unknown
        outcome. Any other end (a Python error, an exit) fails the run, once."""
        assert w.proc is not None
        summary = "wrote its summary" if writer.wrote_summary(w) else "no summary"
        log = w.logs[-1].read_text(errors="replace") if w.logs[-1].exists() else ""
        death = f"{w.ended()}, {summary}; its log:\n{log[-2000:] or '(empty)'}"
        if w.proc.returncode < 0 and self.samples[f"restarts {w.label}"] < 2:
            self.samples[f"restarts {w.label}"] += 1
            self.crashes.append(f"{w.label} {death}")
            self.out.say(f"  {w.label} {death}\n  started again")
            w.start()
        elif "writer died" not in self.samples:
            self.samples["writer died"] += 1
            self.out.fail("writers stay up", f"{w.label} died: {death}")

    def sample(self) -> None:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = self.connect()
            row = self.conn.execute(
                "SELECT extract(epoch FROM now() - min(execute_after) "
                "         FILTER (WHERE status = 'queued' AND execute_after <= now()))::float8, "
                "       extract(epoch FROM now() - min(heartbeat) "
                "         FILTER (WHERE status = 'picked'))::float8, "
                "       count(*) FILTER (WHERE status = 'queued'), "
                "       (SELECT count(*) FROM course_unit_elements) FROM resync.pgqueuer"
            ).fetchone()
            assert row is not None
        except psycopg.Error:
            self.samples["monitor reconnects"] += 1
            self.close()
            return
        self.max_due_wait = max(self.max_due_wait, row[0] or 0.0)
        self.max_picked_age = max(self.max_picked_age, row[1] or 0.0)
        self.max_queued = max(self.max_queued, int(row[2]))
        self.elements_seen = (
            min(self.elements_seen[0], int(row[3])),
            max(self.elements_seen[1], int(row[3])),
        )
        self.samples["queue samples"] += 1

    def progress(self) -> str:
        try:
            with self.connect() as conn:
                q = checks.queue_state(conn)
                runs = checks.one(conn, "SELECT count(*) FROM resync.job_runs")
                fails = checks.one(conn, "SELECT count(*) FROM resync.sync_failures")
        except psycopg.Error as exc:
            return f"(server unreachable: {str(exc).strip().splitlines()[0]})"
        return (
            f"{runs} runs, {fails} inline failures; queue {q['queued']} queued "
            f"({q['due']} due), {q['picked']} picked, {q['failed']} failed"
        )

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
