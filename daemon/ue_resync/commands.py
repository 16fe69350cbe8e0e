"""The subcommands of `ue-resync`, one function each: `cmd_NAME(args, settings)` returns the exit
status, or raises CommandError for a failure to report in one line."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ue_resync import (
    installation,
    jobs,
    laravel_import,
    ledger,
    output,
)
from ue_resync.db import connect_sync
from ue_resync.durations import human_duration, parse_duration
from ue_resync.log import one_line, whole_message
from ue_resync.queries import query
from ue_resync.settings import Settings, redact

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
# `ue-resync check`: drift found and left (without --enqueue); `migrate --verify`: differences.
EXIT_DRIFT = 3


class CommandError(Exception):
    """A failure to report as one line, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


def connect(settings: Settings, role: str) -> psycopg.Connection:
    dsn = settings.dsn()
    try:
        return connect_sync(dsn, role)
    except psycopg.OperationalError as exc:
        raise _unreachable(dsn, exc) from None


def _unreachable(dsn: str, exc: BaseException) -> CommandError:
    """libpq's whole message (the cause is on its first line, a hint on the next), one line."""
    return CommandError(f"cannot connect to {redact(dsn)}: {whole_message(exc)}")


def cmd_work(args: argparse.Namespace, settings: Settings) -> int:
    from ue_resync.worker import NeverConnected, Worker

    worker = Worker(settings, settings.dsn())
    if settings.metrics_port:
        try:
            worker.metrics.serve(settings.metrics_port, settings.metrics_bind)
        except (OSError, ValueError) as exc:
            raise CommandError(
                f"cannot serve metrics on {settings.metrics_bind}:{settings.metrics_port}: "
                f"{one_line(exc)}",
                EXIT_USAGE,
            ) from None
    try:
        return asyncio.run(worker.run())
    except NeverConnected as exc:
        raise _unreachable(exc.dsn, exc.cause) from None


def _status(conn: psycopg.Connection) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query("queue_status")).fetchone()
    assert row is not None
    return dict(row)


NAGIOS = {0: "OK", 1: "WARNING", 2: "CRITICAL"}


def _check_alerts(conn: psycopg.Connection, as_json: bool) -> int:
    """Nagios/Icinga plugin convention: exit 0 OK, 1 WARNING, 2 CRITICAL; first line a summary.
    A monitor that cannot read the schema's version or the alerts (its rights lost in a
    restore, the views dropped) is itself CRITICAL, with what it lacks."""
    try:
        # The alerts belong to one schema version: another one's would be misread.
        ledger.check_current(conn)
        with conn.cursor(row_factory=dict_row) as cur:
            alerts = cur.execute(query("alerts")).fetchall()
    except installation.MISSING as exc:
        detail = f"installation: cannot read resync.alerts ({one_line(exc)}): {installation.REPAIR}"
        if as_json:
            output.emit_json({"status": NAGIOS[2], "alerts": [], "error": detail})
        else:
            print(f"UE-RESYNC {NAGIOS[2]} - {detail}")
        return 2
    status = 2 if any(a["severity"] == "critical" for a in alerts) else (1 if alerts else 0)
    if as_json:
        output.emit_json({"status": NAGIOS[status], "alerts": alerts})
        return status
    if not alerts:
        print("UE-RESYNC OK - no alert")
        return status
    print(
        f"UE-RESYNC {NAGIOS[status]} - " + "; ".join(f"{a['name']}: {a['detail']}" for a in alerts)
    )
    for a in alerts:
        print(f"  [{a['severity']}] {a['name']} = {a['value']} (threshold {a['threshold']})")
    return status


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings, "monitor") as conn:
        if args.check:
            return _check_alerts(conn, args.json)
        # Its views belong to one schema version: another one's figures would be misread.
        ledger.check_current(conn)
        while True:
            status = _status(conn)
            if args.json:
                output.emit_json(status)
            else:
                if args.watch and sys.stdout.isatty():
                    sys.stdout.write("\033[H\033[2J")
                print(output.monitor_text(status), flush=True)
            if not args.watch:
                return EXIT_OK
            time.sleep(args.watch)


def cmd_failed(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings, "failed") as conn:
        rows = _failed_jobs(conn, args.unit)
    if args.json:
        output.emit_json(rows)
    else:
        print(output.failed_text(rows, args.unit))
    return EXIT_OK


def _failed_jobs(conn: psycopg.Connection, unit: int | None = None) -> list[dict[str, Any]]:
    """The failed jobs (only UE `unit`'s when given), each with its UE as a number: None when
    the job names no UE a resync could run on (a payload written by hand)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query("failed_jobs")).fetchall()
    _number_units(rows)
    return [row for row in rows if unit is None or row["course_unit_id"] == unit]


def _number_units(rows: list[dict[str, Any]]) -> None:
    """The queue keeps a job's UE as text (its headers); commands give it as a number, as
    `check` and `sync` do."""
    for row in rows:
        row["course_unit_id"] = jobs.unit_id(row["course_unit_id"])


def _chosen(conn: psycopg.Connection, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The failed jobs `retry` or `forget` is given: every one of a UE (--unit), job ids, or
    'all'. A UE without a failed job, or an id that is not a failed job, is one line's error."""
    if args.unit is not None:
        rows = _failed_jobs(conn, args.unit)
        if not rows:
            raise CommandError(
                f"course unit {args.unit} has no failed job (`ue-resync failed` lists them)"
            )
        return rows
    failed = {row["job_id"]: row for row in _failed_jobs(conn)}
    ids = _ids(args.ids)
    if ids == [None]:
        return list(failed.values())
    for job_id in ids:
        if job_id not in failed:
            raise CommandError(
                f"no failed job with id {job_id} (`ue-resync failed` lists them; "
                "--unit ID takes a course unit's id)"
            )
    return [failed[job_id] for job_id in dict.fromkeys(ids)]


def _ids(values: Sequence[str]) -> list[int | None]:
    if list(values) == ["all"]:
        return [None]
    try:
        return [int(v) for v in values]
    except ValueError:
        raise CommandError("give job ids (integers), 'all' or --unit ID", EXIT_USAGE) from None


def _each(conn: psycopg.Connection, name: str, rows: Sequence[dict[str, Any]]) -> None:
    """Call the operator function of query `name` on each of `rows`' jobs, in one pipeline."""
    with conn.cursor() as cur:
        cur.executemany(query(name), [{"job_id": row["job_id"]} for row in rows])


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings, "retry") as conn, conn.transaction():
        rows = _chosen(conn, args)
        _each(conn, "retry_failed", rows)
    for row in rows:
        print(f"re-queued {output.job_and_unit(row)}")
    print(f"re-queued {len(rows)} failed job(s); workers notified")
    return EXIT_OK


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings, "forget") as conn, conn.transaction():
        rows = _chosen(conn, args)
        _each(conn, "forget_failed", rows)
    for row in rows:
        print(f"deleted failed {output.job_and_unit(row)}")
    return EXIT_OK


def cmd_flush(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings, "flush") as conn:
        row = conn.execute(query("forget_failed"), {"job_id": None}).fetchone()
    print(f"deleted {row[0] if row else 0} failed job(s)")
    return EXIT_OK


def cmd_clear(args: argparse.Namespace, settings: Settings) -> int:
    rows: list[dict[str, Any]] = []
    with connect(settings, "clear") as conn:
        queued = _status(conn)["queued"]
        if queued and (args.force or _confirmed(f"delete {queued} queued job(s)?")):
            with conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(query("clear_queue")).fetchall()
    _number_units(rows)
    if args.json:
        output.emit_json(rows)
    elif not queued:
        print("the queue is empty")
    elif not rows:
        print("nothing deleted")
    else:
        print(output.table(rows, ["job_id", "course_unit_id", "reason", "execute_after"]))
        print(f"deleted {len(rows)} queued job(s)")
    return EXIT_OK


def _confirmed(question: str) -> bool:
    """Ask on the terminal (on stderr, so a --json output stays clean); without one, refuse."""
    if not sys.stdin.isatty():
        raise CommandError(
            f"refusing to {question.rstrip('?')} without confirmation: no terminal to ask on; "
            "add --force",
            EXIT_USAGE,
        )
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in {"y", "yes", "o", "oui"}


def cmd_request(args: argparse.Namespace, settings: Settings) -> int:
    try:
        delay = parse_duration(args.delay)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    with connect(settings, "request") as conn:
        row = conn.execute(
            query("request"), {"unit": args.id, "reason": args.reason, "delay": delay}
        ).fetchone()
    job_id = row[0] if row else None
    when = "now" if delay == 0 else f"in {human_duration(delay)}"
    print(f"resync of course unit {args.id} queued as job {job_id}, due {when}")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings, "sync") as conn:
        row = conn.execute(query("sync_now"), {"unit": args.id}).fetchone()
    result = row[0] if row else {}
    if args.json:
        output.emit_json(result)
        return EXIT_OK
    changes = result.get("changes") or {}
    print(f"course unit {result.get('course_unit_id')} ({result.get('code')}) resynced")
    for column, (before, after) in sorted(changes.items()):
        print(f"  {column}: {output.number(before)} → {output.number(after)}")
    if not changes:
        print("  already consistent")
    return EXIT_OK


def cmd_import_laravel(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings, "import-laravel") as conn:
        try:
            status, left = laravel_import.run(conn, args)
        except laravel_import.LaravelImportError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    for row in left:
        print(f"ue-resync: {row.table} #{row.row_id} left in place: {row.why}", file=sys.stderr)
    return status


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ue_resync import embedded
    from ue_resync.demo import run_demo

    try:
        return run_demo(settings, data_dir=args.data_dir, keep=args.keep)
    except embedded.NotInstalled as exc:
        raise CommandError(str(exc)) from None
