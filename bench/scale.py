"""Scale: a catalogue of 1,000,000 elements in 250,000 UEs (--quick: 10,000 / 2,500).

- `SELECT count(*) FROM resync.drift` on the consistent catalogue, then once every UE drifts
  (course_units updated directly: no trigger is involved); reference: the same check written
  by hand on the totals only (no sync flags, no hours distribution);
- `SELECT resync.enqueue_drifted()` of the 250,000 drifted UEs; reference: one INSERT … SELECT
  of as many plain rows into the queue table (pgqueuer's NOTIFY trigger included);
- the daemon (`ue-resync work --stop-when-empty`, a subprocess with its defaults) draining them:
  its resident memory (VmRSS, sampled every 100 ms; idle RSS measured first) and its rate.

Queries are timed from the client, each round on a vacuumed, analysed database."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bench import common
from bench.common import Bench, Target, timer
from support import processes
from support.catalogue import load_catalogue

NAME = "scale"
TITLE = "1,000,000 elements / 250,000 UEs: drift view, enqueue_drifted, daemon memory"
# The reference: the smallest drift check by hand (the totals only: no sync flags, no hours
# distribution), to show what the view's generality costs.
BARE_CHECK = """
SELECT count(*) FROM public.course_units u
LEFT JOIN (
    SELECT e.course_unit_id AS id, sum(e.credits) AS credits, sum(e.hours_cm) AS cm,
           sum(e.hours_td) AS td, sum(e.hours_tp) AS tp, sum(e.hours_total) AS total,
           count(*)::integer AS n
    FROM public.course_unit_elements e
    WHERE e.status = 'active' AND e.deleted_at IS NULL
    GROUP BY e.course_unit_id) s ON s.id = u.id
WHERE (u.credits, u.hours_cm, u.hours_td, u.hours_tp, u.hours_total, u.elements_count)
      IS DISTINCT FROM
      (coalesce(s.credits, 0), coalesce(s.cm, 0), coalesce(s.td, 0), coalesce(s.tp, 0),
       coalesce(s.total, 0), coalesce(s.n, 0))
"""
TABLES = ("public.course_units", "public.course_unit_elements", "resync.pgqueuer")


def measure(b: Bench) -> None:
    units = 2_500 if b.quick else 250_000
    b.params.update(units=units, elements=units * 4, daemon="subprocess, defaults")
    with b.connect() as conn, timer() as elapsed:
        load_catalogue(conn, units)
    b.extra["load_seconds"] = elapsed()
    common.log(f"scale: {units * 4:,} elements loaded in {elapsed():.1f} s")
    drift(b, 0)
    with b.connect() as conn:
        conn.execute("UPDATE public.course_units SET credits = credits + 1")
    drift(b, units)
    enqueue(b, units)
    daemon_memory(b, units)


def timed(b: Bench, query: str, expect: int | None = None) -> float:
    """Seconds `query` took, from the client; RuntimeError unless it returned `expect`."""
    with b.connect() as conn, timer() as took:
        value = conn.execute(query).fetchone()[0]
    if expect is not None and value != expect:
        raise RuntimeError(f"{query.strip()[:60]}… returned {value}, expected {expect}")
    return took()


def drift(b: Bench, drifted: int) -> None:
    """resync.drift against the check by hand, when `drifted` UEs drift (all of them, or none)."""
    with b.connect() as conn:
        common.settle(conn, *TABLES)
    runs = b.alternate(
        {
            "drift": lambda _: timed(b, "SELECT count(*) FROM resync.drift", drifted),
            "by hand": lambda _: timed(b, BARE_CHECK, drifted),
        }
    )
    b.paired(
        f"resync.drift, {drifted:,} drifted" if drifted else "resync.drift, no UE drifted",
        "s",
        runs["drift"],
        runs["by hand"],
        "drift check by hand, totals only",
        Target("<=", 3.0, on="value"),
    )


def enqueue(b: Bench, units: int) -> None:
    """resync.enqueue_drifted() of every UE against a plain INSERT … SELECT of as many jobs."""

    def enqueue_drifted(_: int) -> float:
        b.fresh_queue("resync.pgqueuer")
        return timed(b, "SELECT resync.enqueue_drifted()", units)

    def plain_insert(_: int) -> float:
        b.fresh_queue("resync.pgqueuer")
        return timed(
            b,
            "WITH ins AS (INSERT INTO resync.pgqueuer (priority, entrypoint, status, payload, "
            "headers) SELECT 0, 'bench_noop', 'queued', "
            "convert_to(json_build_object('course_unit_id', g)::text, 'UTF8'), "
            f"jsonb_build_object('course_unit_id', g::text) FROM generate_series(1, {units}) g "
            "RETURNING 1) SELECT count(*) FROM ins",
            units,
        )

    runs = b.alternate(
        {"enqueue_drifted": enqueue_drifted, "insert": plain_insert}, rounds=1 if b.quick else 2
    )
    b.paired(
        f"enqueue_drifted() of {units:,}",
        "s",
        runs["enqueue_drifted"],
        runs["insert"],
        "plain INSERT … SELECT of as many jobs",
        Target("<=", 10.0, on="value"),
    )


def daemon_memory(b: Bench, units: int) -> None:
    """The daemon's memory, idle first, then while it drains what enqueue_drifted queued; its
    rate."""
    b.fresh_queue("resync.pgqueuer")
    idle = b.start_daemon()
    try:
        b.daemon_ready(idle, 1)
        time.sleep(1)
        idle_rss = rss_mb(idle.pid)
    finally:
        processes.stop(idle)
    b.fresh_queue("resync.pgqueuer")
    with b.connect() as conn:
        # The idle daemon's warm-up resynced UE 1: make it drift again.
        conn.execute("UPDATE public.course_units SET credits = credits + 1 WHERE id = 1")
        queued = conn.execute("SELECT resync.enqueue_drifted()").fetchone()[0]
    began = time.monotonic()
    samples = drain_sampled(b.start_daemon("--stop-when-empty"))
    seconds = time.monotonic() - began
    with b.connect() as conn:
        ok = conn.execute(
            "SELECT count(*) FROM resync.job_runs WHERE outcome = 'succeeded'"
        ).fetchone()[0]
        left = conn.execute("SELECT count(*) FROM resync.drift").fetchone()[0]
    if ok != queued or queued != units or left:
        raise RuntimeError(f"{ok} of {queued} resyncs succeeded, {left} UEs still drifted")
    b.paired(
        "daemon RSS while draining, peak",
        "MB",
        [max(samples)],
        target=Target("<=", 80.0, on="value"),
        note="VmRSS of the daemon process, MiB",
    )
    b.paired("daemon RSS while draining, median", "MB", [common.median(samples)])
    b.paired("daemon RSS, idle", "MB", [idle_rss] if idle_rss else [])
    b.paired(f"daemon drain of {units:,}", "jobs/s", [units / seconds])
    b.extra["rss_samples_mb"] = [round(x, 1) for x in samples]


def drain_sampled(proc: subprocess.Popen[bytes]) -> list[float]:
    """Wait for `proc` (`work --stop-when-empty`) to exit 0, its VmRSS sampled every 100 ms
    meanwhile, in MiB."""
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set() and proc.poll() is None:
            rss = rss_mb(proc.pid)
            if rss is not None:
                samples.append(rss)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        processes.wait_exit(proc, 900)
    finally:
        done.set()
        sampler.join()
    return samples


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process, from /proc (Linux), in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(NAME, TITLE, measure, argv, __doc__, full_rounds=3, quick_rounds=1)


if __name__ == "__main__":
    sys.exit(main())
