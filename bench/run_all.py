"""Every benchmark, one after the other, each in a process of its own that starts its own server:

    python -m bench.run_all [--quick] [--only NAME,NAME] [--no-docs] [--from-results]

Prints each benchmark's table, then a summary of the figures that have a target, and writes it
to bench/results/summary.md (summary.quick.md with --quick). A full run also rewrites the results
section of docs/performance.md (between its markers); --quick never touches docs/. Exits 1 when
a benchmark fails to run; a missed target is a finding, not a failure."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import DOCS, RESULTS, ROOT, experiment, fmt, log, result_path

BENCHMARKS = (
    "writer_tps",
    "bulk_update",
    "drain",
    "latency",
    "lateness",
    "burst",
    "crash_recovery",
    "scale",
    "laravel_writes",
)
BEGIN = "<!-- bench:results:begin (written by python -m bench.run_all) -->"
END = "<!-- bench:results:end -->"


def jit(server: dict[str, Any]) -> str:
    """The server's JIT as the benchmarks met it: on, off, or none built in."""
    if server.get("jit_available") is False:
        return "not available"
    return str(server["settings"].get("jit", "?"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    p.add_argument("--quick", action="store_true", help="every benchmark in its --quick mode")
    p.add_argument("--only", help="comma-separated benchmark names")
    p.add_argument("--no-docs", action="store_true", help="leave docs/performance.md alone")
    p.add_argument(
        "--from-results",
        action="store_true",
        help="run nothing: summarise the results already in bench/results/",
    )
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    started = time.monotonic()
    failed: list[str] = []
    results: list[dict[str, Any]] = []
    for name in names:
        path = result_path(name, args.quick)
        if args.from_results:
            if path.exists():
                results.append(json.loads(path.read_text()))
            else:
                failed.append(name)
            continue
        path.unlink(missing_ok=True)
        log(f"run_all: {name}")
        cmd = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        try:
            env = {**os.environ, **({"BENCH_NO_DOCS": "1"} if args.no_docs else {})}
            code = subprocess.run(
                cmd, cwd=ROOT, env=env, timeout=300 if args.quick else 1500
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
            log(f"run_all: {name} timed out")
        if code != 0 or not path.exists():
            failed.append(name)
            log(f"run_all: {name} FAILED (exit {code})")
            continue
        results.append(json.loads(path.read_text()))
    seconds = time.monotonic() - started
    if args.from_results:
        seconds = sum(r["meta"].get("seconds", 0) for r in results)

    summary = render(results, args.quick, seconds, failed)
    print("\n" + summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = [
        "summary",
        *(["experiment"] if experiment() else []),
        *(["quick"] if args.quick else []),
    ]
    out = RESULTS / (".".join(parts) + ".md")
    out.write_text(summary + "\n")
    shown = out.relative_to(ROOT)
    log(f"run_all: {len(results)} benchmark(s) in {seconds:.0f} s; summary in {shown}")
    if experiment():
        log("run_all: BENCH_EXTRA_SQL or BENCH_DAEMON set: docs/performance.md left alone")
    elif not args.quick and not args.no_docs and not args.only:
        write_docs(DOCS / "performance.md", summary)
    if failed:
        log(f"run_all: failed: {', '.join(failed)}")
        return 1
    return 0


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render(results: list[dict[str, Any]], quick: bool, seconds: float, failed: list[str]) -> str:
    """The summary as Markdown: what it ran on, the targets, then every figure."""
    lines: list[str] = []
    if results:
        m = results[0]["meta"]
        git = m["git"]
        lines.append(
            f"Run of {m['date']} ({'quick' if quick else 'full'} mode, {seconds / 60:.1f} min): "
            f"commit `{git['commit']}`{' with uncommitted changes' if git['dirty'] else ''}, "
            f"{m['server']['kind']} PostgreSQL {m['server']['version']} "
            f"(fsync {m['server']['settings']['fsync']}, synchronous_commit "
            f"{m['server']['settings']['synchronous_commit']}, shared_buffers "
            f"{m['server']['settings']['shared_buffers']}, JIT "
            f"{jit(m['server'])}), {m['cores']} cores, "
            f"pgqueuer {m['packages']['pgqueuer']}, psycopg {m['packages']['psycopg']}, "
            f"Python {m['python']}."
        )
        if m.get("experiment"):
            lines += ["", f"**Experiment, not the checkout:** `{m['experiment']}`."]
        lines.append("")
    if failed:
        lines += [f"**Failed to run:** {', '.join(failed)}.", ""]
    lines += [
        "### Targets",
        "",
        _row(["benchmark", "figure", "value", "spread", "baseline", "ratio", "target", "met"]),
        _row(["---"] * 8),
    ]
    for r in results:
        for f in r["figures"]:
            if f["target"]:
                lines.append(_row(_cells(r["benchmark"], f)))
    lines += ["", "### Every figure", ""]
    for r in results:
        lines += [
            f"**{r['benchmark']}** — {r['title']} ({r['params'].get('rounds')} round(s), "
            f"{r['meta']['seconds']:.0f} s)",
            "",
            _row(["figure", "value (median)", "spread", "baseline", "ratio", "target", "met"]),
            _row(["---"] * 7),
        ]
        lines += [_row(_cells(None, f)) for f in r["figures"]]
        lines += [f"- {note}" for note in r["notes"]]
        lines.append("")
    return "\n".join(lines).rstrip()


def _cells(bench: str | None, f: dict[str, Any]) -> list[str]:
    unit = f["unit"]
    spread = "-"
    if f["low"] is not None and f["high"] is not None and len(f["samples"]) > 1:
        spread = f"{fmt(f['low'], unit)} – {fmt(f['high'], unit)}"
    ratio = "-"
    if f["ratio"] is not None:
        ratio = fmt(f["ratio"], "×")
        if f["ratio_low"] is not None and len(f["samples"]) > 1:
            ratio += f" ({f['ratio_low']:.2f}–{f['ratio_high']:.2f})"
    baseline = fmt(f["baseline"], unit)
    if f["baseline_name"]:
        baseline += f" ({f['baseline_name']})"
    target = f["target"]["text"] if f["target"] else "-"
    met = {True: "yes", False: "**no**", None: "-"}[f["met"]]
    cells = [f["name"], fmt(f["value"], unit), spread, baseline, ratio, target, met]
    return [bench, *cells] if bench else cells


def write_docs(path: Path, summary: str) -> None:
    """Replace the section between the markers of docs/performance.md (append it if absent)."""
    block = f"{BEGIN}\n{summary}\n{END}"
    text = path.read_text() if path.exists() else "# Performance\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Latest results\n\n" + block + "\n"
    path.write_text(text)
    log(f"run_all: {path.relative_to(ROOT)} updated")


if __name__ == "__main__":
    sys.exit(main())
