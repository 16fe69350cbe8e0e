"""Latency: the commit of an element change in deferred mode → its UE resynced by the daemon,
against pgqueuer's own enqueue → handler start with a stock QueueManager (bench/pgq_noop.py).

Changes arrive one at a time, 10–50 ms apart (open loop: the next does not wait for the last to
be resynced), each on a UE of its own, to a daemon started with its defaults. Both ends are read
on the server's clock where possible:
  start  clock_timestamp() as the writer's last statement before COMMIT (so the commit itself,
         WAL flush included, counts in the latency);
  end    resync.job_runs.finished_at (clock_timestamp() once the UE is written, just before
         the daemon's COMMIT); started_at gives the pickup, comparable to the baseline's.
The baseline's end is the no-op handler's time.time() (the host's clock: the server's when it
is local, as the embedded one is). Makes docs/latency.png (full mode) with matplotlib.

--pgbouncer MODE measures the same path behind Debian's pgbouncer (support/pgbouncer.py, started
in front of the server, pool_mode MODE) against direct, alternating three daemons: direct; every
connection through pgbouncer (the writer's too); through pgbouncer with UE_RESYNC_LISTEN_URL
direct. Results go to bench/results/latency_pgbouncer_MODE[.quick].json; no plot."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench import common, pgq_noop
from bench.common import DOCS, Bench, Target, experiment, log, result_path
from support import pgbouncer, processes
from support.catalogue import element_of, load_catalogue

NAME = "latency"
TITLE = "commit (deferred mode) → UE resynced by the daemon, vs pgqueuer enqueue → handler"
GAP = (0.010, 0.050)
TABLES = ("resync.pgqueuer", "resync.pgqueuer_log", "resync.job_runs")


@dataclasses.dataclass
class Runs:
    """What the runs of one benchmark share: its samples per run, its UEs, where the next run of
    ours starts writing, the gaps' random generator, and the pickups of our runs so far."""

    b: Bench
    samples: int
    units: int
    fresh: Iterator[int]
    rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(5))
    pickups: list[list[float]] = dataclasses.field(default_factory=list)

    def prepare(self) -> None:
        self.b.fresh_queue(*TABLES)


def measure(b: Bench, pooler: str | None = None) -> None:
    samples = 30 if b.quick else 120
    # A UE resynced less than ue_resync.debounce (2 s) ago is due a debounce later: with three
    # daemons alternated (--pgbouncer), each run of one writes UEs of its own.
    runs_of_ours = 3 * b.rounds if pooler else 1
    units = samples * runs_of_ours + 1  # the last one is the warm-up's
    # Without a pooler every round writes the same UEs again (the runs are seconds apart).
    runs = Runs(b, samples, units, itertools.cycle(range(1, units, samples)))
    b.params.update(
        samples_per_round=samples,
        gap_ms=[GAP[0] * 1000, GAP[1] * 1000],
        daemon="subprocess, defaults",
        baseline="bench/pgq_noop.py: stock QueueManager + PsycopgDriver, batch 50, poll 3 s",
    )
    with b.connect() as conn:
        load_catalogue(conn, units)
    ours = functools.partial(resynced, runs)
    if pooler is not None:
        pooled(b, pooler, ours)
        return
    variants: dict[str, Callable[[int], list[float]]] = {
        "ue-resync": ours,
        "pgqueuer": functools.partial(baseline, runs),
    }
    found = b.alternate(variants)
    direct_figures(b, found["ue-resync"], runs.pickups, found["pgqueuer"])
    plot(b, found["ue-resync"], runs.pickups, found["pgqueuer"])


def resynced(runs: Runs, _: int, app_dsn: str | None = None, **env: str) -> list[float]:
    """One run of ours: a daemon with `env`, one change per UE of the next fresh range, written
    through `app_dsn` (default: the database directly); commit → resynced of each, in ms. The
    pickups (commit → run started) go to `runs.pickups`."""
    b = runs.b
    runs.prepare()
    proc = b.start_daemon(**env)
    first = next(runs.fresh)
    mine = range(first, first + runs.samples)
    try:
        b.daemon_ready(proc, runs.units)
        committed: dict[int, Any] = {}
        # No prepared statements: behind a transaction pooler they meet other connections.
        with (
            psycopg.connect(app_dsn, autocommit=True, prepare_threshold=None)
            if app_dsn
            else b.connect()
        ) as conn:
            for unit in mine:
                with conn.transaction():
                    # SET LOCAL: a plain SET leaks to other clients under a transaction pooler.
                    conn.execute("SET LOCAL ue_resync.mode = 'deferred'")
                    conn.execute(
                        "UPDATE course_unit_elements SET hours_td = hours_td + 1 WHERE id = %s",
                        (element_of(unit),),
                    )
                    committed[unit] = conn.execute("SELECT clock_timestamp()").fetchone()[0]
                time.sleep(runs.rng.uniform(*GAP))

            def done() -> list[tuple[int, Any, Any]]:
                processes.check_alive(proc)
                rows = conn.execute(
                    "SELECT course_unit_id, started_at, finished_at FROM resync.job_runs "
                    "WHERE outcome = 'succeeded' AND course_unit_id BETWEEN %s AND %s",
                    (mine[0], mine[-1]),
                ).fetchall()
                return rows if len(rows) >= runs.samples else []

            rows = common.wait_for(done, 30, "every change to be resynced", interval=0.05)
    finally:
        processes.stop(proc)
    runs.pickups.append([(s - committed[u]).total_seconds() * 1000 for u, s, _ in rows])
    return [(f - committed[u]).total_seconds() * 1000 for u, _, f in rows]


def baseline(runs: Runs, _: int) -> list[float]:
    """One run of the baseline worker: as many no-op jobs through pgqueuer's enqueue, as far
    apart; enqueue → handler start of each, in ms."""
    b = runs.b
    runs.prepare()

    def schedule() -> dict[int, float]:
        enqueued: dict[int, float] = {}
        with b.connect() as conn:
            pgq_noop.enqueue(conn)  # pgqueuer's query builders, warmed outside the loop
            for _ in range(runs.samples):
                with conn.transaction():
                    job = pgq_noop.enqueue(conn)
                    enqueued[job] = conn.execute(
                        "SELECT extract(epoch FROM clock_timestamp())::float8"
                    ).fetchone()[0]
                time.sleep(runs.rng.uniform(*GAP))
        return enqueued

    return pgq_noop.timed_jobs(b.dsn, b.workdir, b.connect, schedule, 30, 0.05)


def direct_figures(
    b: Bench, ours: list[list[float]], pickups: list[list[float]], base: list[list[float]]
) -> None:
    """The percentiles of our runs and of the baseline's, and every sample."""
    base_name = "pgqueuer enqueue → handler start"
    for q, bound in ((0.5, 10.0), (0.99, 50.0)):
        b.percentile(
            f"commit → resynced p{q * 100:g}",
            "ms",
            q,
            ours,
            base,
            base_name,
            Target("<=", bound, on="value"),
        )
    for q in (0.5, 0.99):
        b.percentile(f"commit → run started p{q * 100:g}", "ms", q, pickups, base, base_name)
    for q in (0.5, 0.99):
        b.percentile(f"baseline: enqueue → handler start p{q * 100:g}", "ms", q, base)
    b.extra["samples_ms"] = {
        "commit_to_resynced": [round(x, 3) for r in ours for x in r],
        "commit_to_started": [round(x, 3) for r in pickups for x in r],
        "baseline_enqueue_to_handler": [round(x, 3) for r in base for x in r],
    }
    assert b.server is not None
    if not b.server.is_local():
        b.notes.append("remote server: the baseline's end is on this host's clock, skew included")


def pooled(b: Bench, mode: str, ours: Callable[..., list[float]]) -> None:
    """commit → resynced behind pgbouncer in `mode`, with and without a direct LISTEN, against
    the daemon connected directly (same run, alternated)."""
    params = conninfo_to_dict(b.dsn)
    host = str(params.get("host") or "/var/run/postgresql")
    with pgbouncer.running(host, int(params.get("port") or 5432), mode, pool_size=20) as bouncer:
        via = bouncer.route(b.dsn)
        b.params.update(
            pgbouncer=f"pool_mode {mode}, default_pool_size 20",
            app="the writer goes through it too",
            baseline="the same daemon connected directly, alternated",
        )
        variants: dict[str, Callable[[int], list[float]]] = {
            "direct": ours,
            "pgbouncer": lambda r: ours(r, via, UE_RESYNC_DATABASE_URL=via),
            "pgbouncer, LISTEN direct": lambda r: ours(
                r, via, UE_RESYNC_DATABASE_URL=via, UE_RESYNC_LISTEN_URL=b.dsn
            ),
        }
        runs = b.alternate(variants)
    for name in ("pgbouncer", "pgbouncer, LISTEN direct"):
        for q in (0.5, 0.99):
            b.percentile(
                f"{name}: commit → resynced p{q * 100:g}",
                "ms",
                q,
                runs[name],
                runs["direct"],
                "direct",
            )
    for q in (0.5, 0.99):
        b.percentile(f"direct: commit → resynced p{q * 100:g}", "ms", q, runs["direct"])


def plot(
    b: Bench,
    resynced: list[list[float]],
    started: list[list[float]],
    baseline: list[list[float]],
) -> None:
    """The three latency distributions as CDFs on a log axis: docs/latency.png in a full run,
    bench/results/latency[.experiment][.quick].png otherwise. Skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("latency: matplotlib is not installed (pip install matplotlib): no plot")
        b.notes.append("plot skipped: matplotlib not installed")
        return
    # docs/ holds the figure of a full run of the checkout only (not of an experiment, nor of a
    # run_all --no-docs, e.g. against another server).
    to_docs = not b.quick and not experiment() and not os.environ.get("BENCH_NO_DOCS")
    path: Path = DOCS / "latency.png" if to_docs else result_path(NAME, b.quick).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    series = (
        ("ue-resync: commit → UE resynced", resynced, "tab:blue", "-"),
        ("ue-resync: commit → run started", started, "tab:blue", ":"),
        ("pgqueuer: enqueue → handler start (baseline)", baseline, "tab:orange", "--"),
    )
    for label, rounds, colour, style in series:
        xs = sorted(max(x, 0.01) for r in rounds for x in r)
        if not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        p50, p99 = common.quantile(xs, 0.5), common.quantile(xs, 0.99)
        ax.step(
            xs,
            ys,
            where="post",
            color=colour,
            linestyle=style,
            label=f"{label}  (p50 {p50:.1f} ms, p99 {p99:.1f} ms)",
        )
    for x, text in ((10, "p50 target"), (50, "p99 target")):
        ax.axvline(x, color="grey", linewidth=0.8, linestyle="-.")
        ax.text(x * 1.05, 0.5, text, color="grey", fontsize=8, rotation=90, va="center")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of changes")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    ax.set_title(
        f"Commit → resynced, {sum(len(r) for r in resynced)} changes, "
        f"{b.rounds} round(s), {os.cpu_count()} cores",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    b.extra["plot"] = str(path.relative_to(common.ROOT))
    log(f"latency: plot written to {path}")


def main(argv: Sequence[str] | None = None) -> int:
    p = common.parser(NAME, __doc__)
    p.add_argument(
        "--pgbouncer",
        choices=("transaction", "session"),
        help="behind pgbouncer in this pool mode, against direct (see above)",
    )
    args: argparse.Namespace = p.parse_args(argv)
    if args.pgbouncer is None:
        return common.run(NAME, TITLE, measure, argv, __doc__, 5, 1, args=args)
    return common.run(
        f"{NAME}_pgbouncer_{args.pgbouncer}",
        f"{TITLE}: behind pgbouncer ({args.pgbouncer} pooling) vs direct",
        lambda b: measure(b, args.pgbouncer),
        argv,
        __doc__,
        5,
        1,
        args=args,
    )


if __name__ == "__main__":
    sys.exit(main())
