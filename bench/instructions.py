"""The breakdown of bench.breakdown in instructions instead of time: what each guarantee of the
element triggers costs a single-row write, counted by callgrind (valgrind) in a single-user
server, a count that does not depend on what else the machine is doing.

A cluster of the embedded server's binaries, with the catalogue loaded and ue-resync installed;
for each variant (the application alone, the floors, the real triggers inline and deferred, and
the copies of bench.breakdown each without one guarantee) it is applied, the server stopped, and
`postgres --single` run under callgrind twice, with N and 2N single-row updates (one transaction
each, as an application writes them). (count(2N) - count(N)) / N is what one write costs once the
session is warm, plan caches included; the same statements' parsing and commit are in every
variant alike, so a variant's figure less the application alone's is what its triggers add."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bench import common
from bench.breakdown import DEFERRED_VARIANTS, VARIANTS, element_triggers
from bench.common import Bench
from bench.floors import FLOORS
from support import catalogue, replication
from support.catalogue import load_catalogue, settle
from support.pgbouncer import as_unprivileged

NAME = "instructions"
TABLES = ("public.course_unit_elements", "public.course_units", "resync.pgqueuer")
TITLE = "instructions per single-row write, by variant of the triggers (callgrind, single-user)"


def as_server(*command: str) -> None:
    """A command run as the server's system user (the owner of its files)."""
    subprocess.run([*as_unprivileged(), *command], check=True, timeout=600)


def count(node: replication.Node, statements: str, options: Sequence[str]) -> int:
    """Instructions callgrind counts for a single-user server running `statements`."""
    out = node.data.parent / "callgrind.out"
    done = subprocess.run(
        [
            *as_unprivileged(),
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            str(node.bindir / "postgres"),
            "--single",
            "-D",
            str(node.data),
            "-F",
            *options,
            "app",
        ],
        input=statements,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    failed = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR:" in line]
    if done.returncode != 0 or failed:
        raise RuntimeError(f"postgres --single failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise RuntimeError(f"no count from callgrind:\n{done.stderr[-2000:]}")


def copied(variants: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The copies of the triggers to count: all of them, or in a quick run the first only (each
    copy runs under callgrind for ~20 s; the quick run shows that the counting works)."""
    return dict(list(variants.items())[:1]) if quick else variants


def measure(b: Bench) -> None:
    units = 2_000 if b.quick else 10_000
    writes = 100 if b.quick else 1_000
    b.params.update(units=units, elements=units * 4, writes=writes, tool="valgrind callgrind")
    statements = [
        "UPDATE course_unit_elements SET hours_td = hours_td + 1 "
        f"WHERE id = {1 + i * 7919 % (units * 4)};\n"
        for i in range(2 * writes)
    ]
    deferred = ("-c", "ue_resync.mode=deferred")
    with replication.servers(replication.embedded_bindir(), 1) as [node]:
        with node.connect() as admin:
            admin.execute("CREATE DATABASE app")
        with node.connect("app") as conn:
            catalogue.install(conn)
            load_catalogue(conn, units)
            conn.execute("TRUNCATE resync.pgqueuer")
            settle(conn, *TABLES)  # no dead row left, every hint bit set
        node.stop()
        # Every variant starts from this copy: no variant's writes are left for the next.
        kept = node.data.parent / "kept"
        as_server("cp", "-a", str(node.data), str(kept))

        def restored() -> None:
            as_server("rm", "-rf", str(node.data))
            as_server("cp", "-a", str(kept), str(node.data))

        def per_write(setup: str, triggers: bool, options: Sequence[str] = ()) -> float:
            restored()
            node.start()
            with node.connect("app") as conn:
                common.set_triggers(conn, triggers)
                if setup:
                    conn.execute(setup.encode())
                conn.execute("CHECKPOINT")
            node.stop()
            variant = node.data.parent / "variant"
            as_server("cp", "-a", str(node.data), str(variant))
            try:
                once = count(node, "".join(statements[:writes]), options)
                as_server("rm", "-rf", str(node.data))
                as_server("cp", "-a", str(variant), str(node.data))
                twice = count(node, "".join(statements), options)
            finally:
                as_server("rm", "-rf", str(variant))
            return (twice - once) / writes

        floor = FLOORS.read_text()
        variants: dict[str, Callable[[int], float]] = {
            "application alone": lambda _: per_write("", False),
            "inline floor": lambda _: per_write(floor, True),
            "deferred floor": lambda _: per_write(floor, True, deferred),
            "ue-resync inline": lambda _: per_write("", True),
            "ue-resync deferred": lambda _: per_write("", True, deferred),
        }
        real = element_triggers()
        for name, (_, make) in copied(VARIANTS, b.quick).items():
            text = make(real)
            variants[name] = lambda _, text=text: per_write(text, True)
        for name, (_, make) in copied(DEFERRED_VARIANTS, b.quick).items():
            text = make(real)
            variants[name] = lambda _, text=text: per_write(text, True, deferred)
        try:
            runs = b.alternate(variants, rounds=1)
        finally:
            restored()
            node.start()
    alone = runs["application alone"][0]
    b.paired("application alone", "instr/write", runs["application alone"])
    for mode in ("inline", "deferred"):
        added = runs[f"ue-resync {mode}"][0] - alone
        floor_added = runs[f"{mode} floor"][0] - alone
        b.paired(f"{mode} floor, added", "instr/write", [floor_added])
        b.paired(f"ue-resync {mode}, added", "instr/write", [added], [floor_added], "its floor")
    for name, (guarantee, _) in copied(VARIANTS, b.quick).items():
        price = runs["ue-resync inline"][0] - runs[name][0]
        b.paired(f"price of: {name}", "instr/write", [price], note=guarantee)
    for name, (guarantee, _) in copied(DEFERRED_VARIANTS, b.quick).items():
        price = runs["ue-resync deferred"][0] - runs[name][0]
        b.paired(f"price of: {name}", "instr/write", [price], note=guarantee)
    b.extra["instructions_per_write"] = {n: v[0] for n, v in runs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(NAME, TITLE, measure, argv, __doc__, 1, 1)


if __name__ == "__main__":
    sys.exit(main())
