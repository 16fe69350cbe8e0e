"""The chaos run's writers (bench/chaos): a writer killed by a signal says how, leaves its Python
stack, is started again in its slot by the run's monitor, and every start's records are read; a
third crash fails the run. A transaction the writer was committing when it crashed counts as of
unknown outcome."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bench.chaos import writer
from bench.chaos.monitor import Monitor, Reporter
from support.catalogue import load_catalogue
from support.poll import wait_for
from support.processes import Slot


@pytest.fixture
def writers() -> Iterator[list[Slot]]:
    started: list[Slot] = []
    yield started
    for w in started:
        w.stop(10)


def committed(out: Path) -> int:
    """The transactions one start of a writer has recorded as committed."""
    lines = out.read_text().splitlines() if out.exists() else []
    return sum(1 for x in lines if x.startswith('{"s"') and '"a": 1' not in x)


def test_a_crashed_writer_is_started_again_and_a_third_crash_fails_the_run(
    dsn: str, conn: psycopg.Connection, tmp_path: Path, writers: list[Slot]
) -> None:
    units = load_catalogue(conn, 20)
    conn.commit()
    config = {"dsn": dsn, "seed": 1, "units": units, "hot": units[:3], "poison": 0, "elements": 80}
    w = writer.slot(0, "mixed", config, tmp_path)
    writers.append(w)
    w.start()
    out = Reporter()
    monitor = Monitor(out, lambda: psycopg.connect(dsn, autocommit=True))

    for crash in (1, 2):
        wait_for(lambda: committed(writer.outputs(w)[-1]) > 0, 30, f"start {crash} to commit")
        assert w.proc is not None
        w.proc.send_signal(signal.SIGSEGV)
        w.proc.wait(30)
        monitor.writer_ended(w)
        assert out.failures == []
        assert len(monitor.crashes) == crash and w.alive()
        assert monitor.crashes[-1].startswith(
            "writer 0 (mixed) killed by SIGSEGV, no summary; its log:"
        )
        assert "Fatal Python error: Segmentation fault" in monitor.crashes[-1]

    wait_for(lambda: committed(writer.outputs(w)[-1]) > 0, 30, "start 3 to commit")
    assert w.proc is not None
    w.proc.send_signal(signal.SIGSEGV)
    w.proc.wait(30)
    monitor.writer_ended(w)
    monitor.writer_ended(w)  # the next tick: one failure, not one per tick
    assert len(out.failures) == 1
    assert out.failures[0].startswith("writers stay up: writer 0 (mixed) died: killed by SIGSEGV")

    # Each start wrote its own file, and records() reads them all.
    outs = writer.outputs(w)
    lines, _ = writer.records(outs)
    assert len(outs) == 3
    assert len([r for r in lines if not r.get("a")]) == sum(committed(out) for out in outs)


def test_a_commit_in_flight_at_a_crash_is_of_unknown_outcome(tmp_path: Path) -> None:
    outs = [tmp_path / "writer-0-mixed.1.jsonl", tmp_path / "writer-0-mixed.2.jsonl"]
    done = {"s": 1.0, "b": 2.0, "t": 3.0, "m": "inline", "c": [[5, 0, 0, 1]]}
    aborted = {"s": 4.0, "b": 5.0, "m": "inline", "c": [[6, 0, 0, 1]]}
    in_flight = {"s": 6.0, "b": 7.0, "m": "off", "c": [[7, 2, 0, 1]]}
    first = [
        {"pending": {k: v for k, v in done.items() if k != "t"}},
        done,
        {"pending": aborted},
        {"rolled_back": 1},
        {"pending": in_flight},
    ]
    outs[0].write_text("".join(json.dumps(x) + "\n" for x in first) + '{"s": 8.0, "b"')
    second = [{"pending": done}, done, {"summary": {"transactions": 1, "op_insert": 1}}]
    outs[1].write_text("".join(json.dumps(x) + "\n" for x in second))

    lines, summary = writer.records(outs)
    assert lines == [done, {**in_flight, "t": 7.0, "a": 1}, done]
    assert summary == {"transactions": 1, "op_insert": 1}
