"""What every benchmark shares: the A/B alternation, figures with their spread and their ratios
against the same run's baseline (bench/figures.py), the output (a table on stdout,
bench/results/<name>.json with every figure and its provenance, bench/provenance.py), the entry
point that starts the server around a benchmark (support.postgres), progress lines on stderr,
and small database helpers."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from bench.figures import (
    Figure,
    Target,
    finite,
    median,
    paired_ratios,
    quantile,
    table,
    unpaired_note,
)
from bench.provenance import experiment, meta
from support import processes
from support.catalogue import ELEMENT_TRIGGERS
from support.catalogue import settle as settle
from support.env import ROOT, pythonpath
from support.poll import wait_for as wait_for
from support.postgres import Postgres, start_postgres

RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"

# The triggers of sql/definitions/element_triggers.sql that a write fires: disabling them all is
# the "no ue-resync" baseline.
TRIGGERS = tuple(t for t in ELEMENT_TRIGGERS if not t.endswith("_truncate"))
T = TypeVar("T")


def log(message: str) -> None:
    """Progress on stderr, so stdout keeps only the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the run of one benchmark ----------------------------------------------------------------------


class Bench:
    """The state of one benchmark run: its database, its parameters, the figures found."""

    def __init__(self, name: str, title: str, args: argparse.Namespace, rounds: int) -> None:
        self.name = name
        self.title = title
        self.quick: bool = args.quick
        self.rounds = rounds
        self.figures: list[Figure] = []
        self.params: dict[str, Any] = {"rounds": rounds}
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}
        self.server: Postgres | None = None
        self.dbname = f"ue_resync_bench_{os.getpid()}"
        self.dsn = ""
        self.workdir = Path(tempfile.mkdtemp(prefix=f"ue-resync-bench-{name}-"))

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        """An autocommit connection to the benchmark's database."""
        return psycopg.connect(self.dsn, autocommit=True, **kwargs)

    def start_daemon(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """`ue-resync work ARGS` on the benchmark's database, in its scratch directory; `env`
        adds UE_RESYNC_* settings (defaults otherwise). BENCH_DAEMON replaces `python -m
        ue_resync` (a candidate daemon, see bench/README.md)."""
        candidate = shlex.split(os.environ.get("BENCH_DAEMON", ""))
        return processes.spawn_daemon(
            self.dsn,
            *args,
            cwd=self.workdir,
            log=self.workdir / f"daemon-{time.monotonic_ns()}.log",
            command=candidate or processes.UE_RESYNC,
            PYTHONPATH=pythonpath(checkout_daemon=not candidate),
            **env,
        )

    def daemon_ready(self, proc: subprocess.Popen[bytes], unit: int, timeout: float = 30) -> None:
        """Wait until the daemon `proc` has resynced one warm-up job of UE `unit`: it is
        listening and its loop turns."""
        with self.connect() as conn:
            job = conn.execute("SELECT resync.request(%s, 'bench_warm_up')", (unit,)).fetchone()[0]

            def done() -> bool:
                processes.check_alive(proc)
                return bool(
                    conn.execute(
                        "SELECT count(*) FROM resync.job_runs "
                        "WHERE job_id = %s AND outcome = 'succeeded'",
                        (job,),
                    ).fetchone()[0]
                )

            wait_for(done, timeout, "the daemon's warm-up job", interval=0.05)

    def fresh_queue(self, *tables: str) -> None:
        """Empty the queue and what the daemons recorded, then settle `tables`: every timed run
        starts from the same state."""
        with self.connect() as conn:
            reset_queue(conn)
            settle(conn, *tables)

    # -- measuring --

    def alternate(
        self,
        variants: dict[str, Callable[[int], T]],
        rounds: int | None = None,
    ) -> dict[str, list[T]]:
        """Run each variant once per round, in the order A B C, then C B A, and so on, so a
        drift of the machine during the run weighs on every variant alike."""
        names = list(variants)
        out: dict[str, list[T]] = {n: [] for n in names}
        total = rounds or self.rounds
        for r in range(total):
            order = names if r % 2 == 0 else names[::-1]
            for n in order:
                started = time.monotonic()
                result = variants[n](r)
                out[n].append(result)
                shown = f"{result:,.4g}" if isinstance(result, float | int) else "done"
                log(
                    f"{self.name}: round {r + 1}/{total} {n}: {shown} "
                    f"({time.monotonic() - started:.1f} s)"
                )
        return out

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def paired(
        self,
        name: str,
        unit: str,
        values: Sequence[float],
        baseline: Sequence[float] | None = None,
        baseline_name: str | None = None,
        target: Target | None = None,
        note: str = "",
    ) -> Figure:
        """A figure measured once per round, with its ratio to the baseline of the same round."""
        fig = Figure(
            name,
            unit,
            median(values),
            min(values, default=None),
            max(values, default=None),
            samples=list(values),
            target=target,
            note=note,
        )
        if baseline:
            ratios, unpaired = paired_ratios(values, baseline)
            fig.baseline = median(baseline)
            fig.baseline_name = baseline_name
            fig.ratio = median(ratios)
            fig.ratio_low = min(ratios, default=None)
            fig.ratio_high = max(ratios, default=None)
            self._unpaired(fig, unpaired)
        return self.add(fig)

    def _unpaired(self, fig: Figure, rounds: Sequence[int]) -> None:
        """Rounds left out of the ratio are said, in the figure and under the table."""
        if rounds:
            note = unpaired_note(fig.name, rounds)
            fig.note = f"{fig.note}; {note}" if fig.note else note
            self.notes.append(note)

    def percentile(
        self,
        name: str,
        unit: str,
        q: float,
        rounds: Sequence[Sequence[float]],
        baseline: Sequence[Sequence[float]] | None = None,
        baseline_name: str | None = None,
        target: Target | None = None,
        note: str = "",
    ) -> Figure:
        """The q-quantile of every sample of every round pooled; the spread is that quantile
        round by round, and the ratio is pooled over pooled."""
        pooled = [x for r in rounds for x in r]
        by_round = [quantile(r, q) for r in rounds]  # NaN for a round without samples
        per_round = [x for x in by_round if not math.isnan(x)]
        fig = Figure(
            name,
            unit,
            quantile(pooled, q),
            min(per_round, default=None),
            max(per_round, default=None),
            spread=f"p{q * 100:g} of each round, min–max",
            samples=per_round,
            target=target,
            note=note,
        )
        if baseline:
            base_pooled = [x for r in baseline for x in r]
            fig.baseline = quantile(base_pooled, q)
            fig.baseline_name = baseline_name
            if fig.baseline and fig.value is not None:
                fig.ratio = fig.value / fig.baseline
            ratios, unpaired = paired_ratios(by_round, [quantile(r, q) for r in baseline])
            fig.ratio_low = min(ratios, default=None)
            fig.ratio_high = max(ratios, default=None)
            self._unpaired(fig, unpaired)
        return self.add(fig)

    # -- output --

    def report(self, meta: dict[str, Any]) -> dict[str, Any]:
        mode = "quick" if self.quick else "full"
        print(f"\n== {self.name}: {self.title} ({mode}, {self.rounds} round(s))")
        print(
            f"   {meta['server']['kind']} PostgreSQL {meta['server']['version']}, "
            f"{meta['cores']} cores, commit {meta['git']['commit'] or '?'}"
            f"{' (dirty)' if meta['git']['dirty'] else ''}, {meta['date']}"
        )
        if meta.get("experiment"):
            print(f"   EXPERIMENT, not the checkout: {meta['experiment']}")
        print(table(self.figures))
        for note in self.notes:
            print(f"   note: {note}")
        data = {
            "benchmark": self.name,
            "title": self.title,
            "mode": mode,
            "params": self.params,
            "meta": meta,
            "figures": [f.as_json() for f in self.figures],
            "notes": self.notes,
            "extra": finite(self.extra),
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = result_path(self.name, self.quick)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        print(f"   results: {path.relative_to(ROOT)}")
        return data


def result_path(name: str, quick: bool) -> Path:
    """bench/results/NAME.json, NAME.quick.json, or NAME.experiment[.quick].json when
    BENCH_EXTRA_SQL or BENCH_DAEMON is set (a candidate never overwrites the checkout's)."""
    parts = [name, *(["experiment"] if experiment() else []), *(["quick"] if quick else [])]
    return RESULTS / (".".join(parts) + ".json")


# -- entry point -----------------------------------------------------------------------------------


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m bench.{name}",
        description=(doc or "").strip().splitlines()[0] if doc else None,
    )
    p.add_argument(
        "--quick", action="store_true", help="small and short: proves the benchmark still runs"
    )
    p.add_argument("--rounds", type=int, help="A/B rounds (default: the benchmark's own)")
    return p


def run(
    name: str,
    title: str,
    measure: Callable[[Bench], None],
    argv: Sequence[str] | None,
    doc: str | None,
    full_rounds: int,
    quick_rounds: int,
    args: argparse.Namespace | None = None,
) -> int:
    """Start the server, create and migrate the database, `measure`, report, clean up."""
    if args is None:
        args = parser(name, doc).parse_args(argv)
    rounds = args.rounds or (quick_rounds if args.quick else full_rounds)
    bench = Bench(name, title, args, rounds)
    started = time.monotonic()
    try:
        # The server of UE_RESYNC_DATABASE_URL, or an embedded one (bench/README.md).
        server = bench.server = start_postgres(
            os.environ.get("UE_RESYNC_DATABASE_URL"), prefix="ue-resync-bench-pg-"
        )
        bench.dsn = server.create_database(bench.dbname)
        extra = os.environ.get("BENCH_EXTRA_SQL")
        if extra:
            # A candidate migration, measured before it lands (see bench/README.md).
            log(f"EXPERIMENT: applying {extra} after the migrations")
            with bench.connect() as conn, conn.transaction():
                conn.execute(Path(extra).read_text().encode())
        log(f"{name}: {server.kind} server ready, database {bench.dbname}")
        with bench.connect() as conn:
            info = meta(conn, server)
        measure(bench)
        info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        info["seconds"] = round(time.monotonic() - started, 1)
        bench.report(info)
    finally:
        if bench.server is not None:
            bench.server.drop_database(bench.dbname)
            bench.server.stop()
        shutil.rmtree(bench.workdir, ignore_errors=True)
    return 0


# -- small helpers the benchmarks share ------------------------------------------------------------


def set_triggers(conn: psycopg.Connection, enabled: bool) -> None:
    """Enable or disable ue-resync's element triggers (the baseline runs without them)."""
    action = "ENABLE" if enabled else "DISABLE"
    for trigger in TRIGGERS:
        conn.execute(
            sql.SQL("ALTER TABLE public.course_unit_elements {} TRIGGER {}").format(
                sql.SQL(action), sql.Identifier(trigger)
            )
        )


def reset_queue(conn: psycopg.Connection) -> None:
    """Empty the queue and everything the daemon and pgqueuer recorded."""
    conn.execute(
        "TRUNCATE resync.pgqueuer, resync.pgqueuer_log, resync.pgqueuer_statistics, "
        "resync.job_runs, resync.sync_failures, resync.workers"
    )


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """`with timer() as elapsed: ...; elapsed()` — seconds, monotonic."""
    started = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - started
    end.append(time.perf_counter())
