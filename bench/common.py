"""What every benchmark shares: the A/B alternation, the statistics (median and spread, ratios
against the same run's baseline), the output (a table on stdout, bench/results/<name>.json with
every figure and what it was measured on), the entry point that starts the server (server.py)
around a benchmark, and small database helpers."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from bench.server import ROOT, Server, experiment, log, meta

RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"

# The three statement triggers and the row trigger of sql/definitions/element_triggers.sql:
# disabling them all
# is the "no ue-resync" baseline.
TRIGGERS = (
    "course_unit_elements_resync_statement_insert",
    "course_unit_elements_resync_statement_update",
    "course_unit_elements_resync_statement_delete",
    "course_unit_elements_resync_row",
)
T = TypeVar("T")


# -- statistics ------------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile, linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


@dataclasses.dataclass(frozen=True)
class Target:
    """`op` is '>=' or '<='; it applies to the ratio (on='ratio') or the value itself."""

    op: str
    bound: float
    on: str = "ratio"

    def met(self, x: float | None) -> bool | None:
        if x is None or math.isnan(x):
            return None
        return x >= self.bound if self.op == ">=" else x <= self.bound

    def text(self, unit: str) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        if self.on == "ratio":
            return f"{sign} {self.bound:g}× baseline"
        return f"{sign} {fmt(self.bound, unit)}"


@dataclasses.dataclass
class Figure:
    """One measured figure: its median (or named statistic) and spread, the baseline it is
    held against, the ratio to it (paired per round), and the target."""

    name: str
    unit: str
    value: float | None
    low: float | None = None
    high: float | None = None
    spread: str = "min–max of rounds"
    samples: list[float] = dataclasses.field(default_factory=list)
    baseline: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    target: Target | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.met(self.ratio if self.target.on == "ratio" else self.value)

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target"] = (
            None
            if self.target is None
            else {**dataclasses.asdict(self.target), "text": self.target.text(self.unit)}
        )
        data["met"] = self.met
        return _finite(data)


def _finite(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "×":
        return f"{value:.2f}×"
    if unit in ("ms", "s"):
        digits = 1 if abs(value) >= 10 else (2 if abs(value) >= 1 else 3)
        return f"{value:,.{digits}f} {unit}"
    whole = abs(value) >= 100 or float(value).is_integer()
    text = f"{value:,.0f}" if whole else f"{value:,.2f}"
    return f"{text} {unit}".strip()


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
        self.server = Server()
        self.dsn = ""
        self.workdir = Path(tempfile.mkdtemp(prefix=f"ue-resync-bench-{name}-"))

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        """An autocommit connection to the benchmark's database."""
        return psycopg.connect(self.dsn, autocommit=True, **kwargs)

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
            ratios = [a / b for a, b in zip(values, baseline, strict=True) if b]
            fig.baseline = median(baseline)
            fig.baseline_name = baseline_name
            fig.ratio = median(ratios)
            fig.ratio_low = min(ratios, default=None)
            fig.ratio_high = max(ratios, default=None)
        return self.add(fig)

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
        per_round = [quantile(r, q) for r in rounds if r]
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
            base_rounds = [quantile(r, q) for r in baseline if r]
            fig.baseline = quantile(base_pooled, q)
            fig.baseline_name = baseline_name
            if fig.baseline and fig.value is not None:
                fig.ratio = fig.value / fig.baseline
                ratios = [a / b for a, b in zip(per_round, base_rounds, strict=False) if b]
                fig.ratio_low = min(ratios, default=None)
                fig.ratio_high = max(ratios, default=None)
        return self.add(fig)

    # -- output --

    def table(self) -> str:
        head = ["figure", "value", "spread", "baseline", "ratio (spread)", "target", "met"]
        rows = []
        for f in self.figures:
            spread = (
                f"{fmt(f.low, f.unit)} – {fmt(f.high, f.unit)}"
                if f.low is not None and f.high is not None and len(f.samples) != 1
                else "-"
            )
            ratio = "-"
            if f.ratio is not None:
                ratio = fmt(f.ratio, "×")
                if f.ratio_low is not None and f.ratio_high is not None:
                    ratio += f" ({f.ratio_low:.2f}–{f.ratio_high:.2f})"
            met = {True: "yes", False: "NO", None: "-"}[f.met]
            rows.append(
                [
                    f.name,
                    fmt(f.value, f.unit),
                    spread,
                    fmt(f.baseline, f.unit),
                    ratio,
                    f.target.text(f.unit) if f.target else "-",
                    met,
                ]
            )
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
        lines.append("  ".join("-" * w for w in widths))
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        return "\n".join(lines)

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
        print(self.table())
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
            "extra": _finite(self.extra),
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
        bench.server.start()
        bench.dsn = bench.server.create_database()
        log(f"{name}: {bench.server.kind} server ready, database {bench.server.dbname}")
        with bench.connect() as conn:
            info = meta(conn, bench.server)
        measure(bench)
        info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        info["seconds"] = round(time.monotonic() - started, 1)
        bench.report(info)
    finally:
        bench.server.drop_database()
        bench.server.stop()
        shutil.rmtree(bench.workdir, ignore_errors=True)
    return 0


# -- small helpers the benchmarks share ------------------------------------------------------------


def wait_for(predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.02) -> T:
    """The first truthy value of `predicate`, polled; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def set_triggers(conn: psycopg.Connection, enabled: bool) -> None:
    """Enable or disable ue-resync's element triggers (the baseline runs without them)."""
    action = "ENABLE" if enabled else "DISABLE"
    for trigger in TRIGGERS:
        conn.execute(
            sql.SQL("ALTER TABLE public.course_unit_elements {} TRIGGER {}").format(
                sql.SQL(action), sql.Identifier(trigger)
            )
        )


def settle(conn: psycopg.Connection, *tables: str) -> None:
    """VACUUM (ANALYZE) the tables and CHECKPOINT, so every timed run starts from the same
    state: no dead rows left by the previous one, no full-page writes owed to a checkpoint."""
    for table in tables:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.SQL(table)))
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")


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
