"""What the Laravel application feels: Eloquent writes from the fixture application
(tests/laravel/, real PHP and Laravel 8), timed inside PHP so its start-up is not counted.

  single saves  find one element, change hours_cm, save(): one per request-like iteration,
                2,000 of them over 800 elements of 200 UEs (autocommit, as a web request)
  import        10,000 CourseUnitElement::create() over 100 new UEs in one DB::transaction

each in four variants alternated round by round: no sync at all (triggers disabled, no
observer), the old observer (PHP recomputes the UE after every event), ue-resync's triggers,
and both (the first minutes of a cutover); the single saves also with the triggers in deferred
mode (PGOPTIONS='-c ue_resync.mode=deferred', no daemon running). Figures are writes per second;
ratios against no sync, and ue-resync against the observer. A single save is a one-client write:
what the triggers add to one, in µs, is reported against no sync for each mode. `--floors` adds
to the single saves' rounds the floor of each mode (bench/floor_triggers.sql: the least a row
trigger that recomputes the UE, or queues its job, can do), with the triggers' added µs against
their floor's, and the inline floor behind the real routing (bench/floor_routed.sql), as
writer_tps --floors. Needs php-cli, php-pgsql, php-laravel-framework."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from bench import common
from bench.common import ROOT, Bench, Target
from bench.floors import FLOORS, ROUTED, check_routed, swapped
from support.catalogue import load_catalogue
from support.env import scrubbed_env

NAME = "laravel_writes"
TITLE = "Eloquent writes from Laravel: no sync, old observer, ue-resync triggers"
ARTISAN = ROOT / "tests" / "laravel" / "artisan.php"
TABLES = ("public.course_unit_elements", "public.course_units", "resync.pgqueuer")
VARIANTS = {  # name: (triggers enabled, observer registered)
    "none": (False, False),
    "observer": (False, True),
    "triggers": (True, False),
    "both": (True, True),
}


DEFERRED = "-c ue_resync.mode=deferred"


def _php(dsn: str, observer: bool, *args: str, options: str = "") -> Any:
    php = shutil.which("php")
    if php is None:
        raise SystemExit("laravel_writes needs php-cli, php-pgsql and php-laravel-framework")
    params = conninfo_to_dict(dsn)
    env = {
        **scrubbed_env(),
        "DB_HOST": str(params.get("host") or "127.0.0.1"),
        "DB_PORT": str(params.get("port") or 5432),
        "DB_DATABASE": str(params["dbname"]),
        "DB_USERNAME": str(params.get("user") or "postgres"),
        "DB_PASSWORD": str(params.get("password") or ""),
        "RESYNC_OBSERVER": "1" if observer else "0",
    }
    if options:
        env["PGOPTIONS"] = options  # read by libpq, under pdo_pgsql
    done = subprocess.run(
        [php, str(ARTISAN), *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"php artisan.php {args[:2]}: {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(b: Bench, floors: bool = False, imports: bool = True) -> None:
    units, saves, imported = (50, 200, 500) if b.quick else (200, 2_000, 10_000)
    b.params.update(units=units, elements=units * 4, saves=saves, imported=imported, floors=floors)
    with b.connect() as conn:
        load_catalogue(conn, units)
    _php(b.dsn, False, "migrate", "--queue-only")
    ids = list(range(1, units * 4 + 1))

    def prepare(triggers: bool) -> None:
        with b.connect() as conn:
            common.set_triggers(conn, triggers)
            conn.execute(
                "DELETE FROM course_unit_elements WHERE id > %s", (units * 4,)
            )  # earlier imports
            conn.execute("TRUNCATE resync.pgqueuer")
            common.settle(conn, *TABLES)

    def saves_run(name: str, floor: Path | None = None, options: str = "") -> float:
        triggers, observer = VARIANTS[name]
        with swapped(b, floor):
            prepare(triggers)
            seconds = _php(
                b.dsn,
                observer,
                "call",
                "bench_saves",
                json.dumps({"ids": ids, "n": saves}),
                options=options,
            )
        return saves / seconds

    def import_run(name: str) -> float:
        triggers, observer = VARIANTS[name]
        prepare(triggers)
        with b.connect() as conn:
            common.set_triggers(conn, True)  # the new UEs' rows, not timed
            new_units = [
                conn.execute(
                    "INSERT INTO course_units (code, name) VALUES ('IMP', 'import') RETURNING id"
                ).fetchone()[0]
                for _ in range(100)
            ]
            common.set_triggers(conn, triggers)
        seconds = _php(
            b.dsn, observer, "call", "bench_import", json.dumps({"units": new_units, "n": imported})
        )
        return imported / seconds

    single_variants = {n: (lambda _, n=n: saves_run(n)) for n in VARIANTS}
    single_variants["deferred"] = lambda _: saves_run("triggers", options=DEFERRED)
    if floors:
        check_routed()
        single_variants["inline floor"] = lambda _: saves_run("triggers", FLOORS)
        single_variants["deferred floor"] = lambda _: saves_run("triggers", FLOORS, DEFERRED)
        single_variants["routed floor"] = lambda _: saves_run("triggers", ROUTED)
    try:
        single = b.alternate(single_variants)
        bulk = b.alternate({n: (lambda _, n=n: import_run(n)) for n in VARIANTS}) if imports else {}
    finally:
        with b.connect() as conn:
            common.set_triggers(conn, True)

    for label, runs in (("single saves", single), ("import", bulk)):
        if not runs:
            continue
        base = runs["none"]
        b.paired(f"{label}: no sync", "writes/s", base)
        b.paired(f"{label}: old observer", "writes/s", runs["observer"], base, "no sync")
        b.paired(
            f"{label}: ue-resync triggers",
            "writes/s",
            runs["triggers"],
            base,
            "no sync",
            Target(">=", 0.95) if label == "single saves" else None,
        )
        b.paired(
            f"{label}: ue-resync vs old observer",
            "writes/s",
            runs["triggers"],
            runs["observer"],
            "old observer",
            Target(">=", 2.0) if label == "single saves" else None,
        )
        b.paired(
            f"{label}: observer + triggers (cutover)", "writes/s", runs["both"], base, "no sync"
        )
    one_client(b, single, floors)


def one_client(b: Bench, single: dict[str, list[float]], floors: bool) -> None:
    """What the triggers add to one save, in µs, against no sync, per mode; with the floors,
    against the floor's added µs of the same round. An Eloquent save is a one-client write."""

    def added(name: str) -> list[float]:
        return [1e6 / v - 1e6 / n for v, n in zip(single[name], single["none"], strict=True)]

    b.paired(
        "single saves: deferred triggers", "writes/s", single["deferred"], single["none"], "no sync"
    )
    for mode, name in (("inline", "triggers"), ("deferred", "deferred")):
        floor = f"{mode} floor"
        if not floors:
            b.paired(f"single saves: {mode}, added latency", "µs/save", added(name))
            continue
        b.paired(f"single saves: {mode} floor, added latency", "µs/save", added(floor))
        b.paired(
            f"single saves: {mode}, added latency",
            "µs/save",
            added(name),
            added(floor),
            f"the {mode} floor's added latency",
            Target("<=", 1.5),
        )
    if floors:
        b.paired(
            "single saves: inline routed floor, added latency",
            "µs/save",
            added("routed floor"),
            added("inline floor"),
            "the inline floor's added latency",
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = common.parser(NAME, __doc__)
    p.add_argument(
        "--floors",
        action="store_true",
        help="also measure, in the single saves' rounds, the floor of each mode "
        "(bench/floor_triggers.sql), and the inline one behind the real routing "
        "(bench/floor_routed.sql)",
    )
    p.add_argument(
        "--no-import",
        action="store_true",
        help="the single saves only (the import's rounds take minutes with the observer); "
        "results in laravel_writes_saves_only.json, so a full run's stay",
    )
    args = p.parse_args(argv)
    run = functools.partial(measure, floors=args.floors, imports=not args.no_import)
    name = f"{NAME}_saves_only" if args.no_import else NAME
    return common.run(name, TITLE, run, argv, __doc__, 5, 1, args)


if __name__ == "__main__":
    sys.exit(main())
