"""The `ue-resync` command: one subcommand, one function. The old artisan commands map as
queue:work → work, queue:monitor → monitor, queue:failed → failed, queue:retry → retry,
queue:forget → forget, queue:flush → flush, queue:clear → clear, dispatch → request,
dispatchSync → sync. Errors are one line on stderr and a non-zero exit status."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ue_resync import __version__, jobs, log, migrate
from ue_resync.db import connect_sync
from ue_resync.queries import query
from ue_resync.settings import Settings, SettingsError, load, redact

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A failure to report as one line, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# -- output --------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral() else int(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value


def emit_json(data: Any) -> None:
    print(json.dumps(data, default=_plain, ensure_ascii=False, indent=2))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    value = _plain(value)
    text = str(value)
    return text if len(text) <= 70 else text[:67] + "..."


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Aligned columns, header underlined; numbers right-aligned."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row.get(c), int | float | Decimal) or row.get(c) is None for row in rows)
        for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _paint(text: str, colour: str) -> str:
    codes = {"red": "31", "yellow": "33", "green": "32", "bold": "1"}
    return f"\033[{codes[colour]}m{text}\033[0m" if sys.stdout.isatty() else text


# -- commands -------------------------------------------------------------------------------------


def _connect(settings: Settings, role: str) -> psycopg.Connection:
    dsn = settings.dsn()
    try:
        return connect_sync(dsn, role)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreachable"
        raise CommandError(f"cannot connect to {redact(dsn)}: {reason}") from None


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(settings, "migrate") as conn:
        if args.print_sql:
            sys.stdout.write(migrate.print_sql(conn))
            return EXIT_OK
        done = migrate.apply(conn)
        version = migrate.check_current(conn)
    if done:
        print(f"applied {len(done)} migration(s): {', '.join(m.name for m in done)}")
    print(f"schema at version {version}")
    return EXIT_OK


def cmd_work(args: argparse.Namespace, settings: Settings) -> int:
    from ue_resync.worker import Worker

    worker = Worker(settings, settings.dsn())
    if settings.metrics_port:
        try:
            worker.metrics.serve(settings.metrics_port, settings.metrics_bind)
        except (OSError, ValueError) as exc:
            raise CommandError(
                f"cannot serve metrics on {settings.metrics_bind}:{settings.metrics_port}: "
                f"{_first(exc)}",
                EXIT_USAGE,
            ) from None
    return asyncio.run(worker.run())


def _status(conn: psycopg.Connection) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query("queue_status")).fetchone()
    assert row is not None
    return dict(row)


def _monitor_text(status: dict[str, Any]) -> str:
    failed = status["failed_last_hour"]
    lines = [
        _paint("ue-resync queue", "bold") + f"  ({dt.datetime.now().strftime('%H:%M:%S')})",
        f"  queued   {status['queued']:>7}   due {status['due']}, delayed {status['delayed']}",
        f"  running  {status['running']:>7}",
        f"  failed   {status['failed_total']:>7}   "
        + (_paint(f"{failed} in the last hour", "red") if failed else "0 in the last hour"),
        f"  oldest due job waiting   {jobs.human_duration(status['oldest_due_age_seconds'])}",
        f"  run time (last hour)     avg {jobs.human_duration(status['run_time_avg_seconds'])}, "
        f"p95 {jobs.human_duration(status['run_time_p95_seconds'])}",
        f"  live workers             {status['live_workers']}",
    ]
    return "\n".join(lines)


NAGIOS = {0: "OK", 1: "WARNING", 2: "CRITICAL"}


def _check_alerts(conn: psycopg.Connection, as_json: bool) -> int:
    """Nagios/Icinga plugin convention: exit 0 OK, 1 WARNING, 2 CRITICAL; first line a summary."""
    with conn.cursor(row_factory=dict_row) as cur:
        alerts = cur.execute(query("alerts")).fetchall()
    status = 2 if any(a["severity"] == "critical" for a in alerts) else (1 if alerts else 0)
    if as_json:
        emit_json({"status": NAGIOS[status], "alerts": alerts})
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
    with _connect(settings, "monitor") as conn:
        if args.check:
            return _check_alerts(conn, args.json)
        while True:
            status = _status(conn)
            if args.json:
                emit_json(status)
            else:
                if args.watch and sys.stdout.isatty():
                    sys.stdout.write("\033[H\033[2J")
                print(_monitor_text(status), flush=True)
            if not args.watch:
                return EXIT_OK
            time.sleep(args.watch)


def cmd_failed(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(settings, "failed") as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query("failed_jobs")).fetchall()
    if args.json:
        emit_json(rows)
    elif not rows:
        print("no failed jobs")
    else:
        print(
            table(
                rows, ["job_id", "course_unit_id", "reason", "attempts", "last_error", "failed_at"]
            )
        )
    return EXIT_OK


def _ids(values: Sequence[str]) -> list[int | None]:
    if list(values) == ["all"]:
        return [None]
    try:
        return [int(v) for v in values]
    except ValueError:
        raise CommandError("give job ids (integers) or 'all'", EXIT_USAGE) from None


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    total = 0
    with _connect(settings, "retry") as conn, conn.transaction():
        for job_id in _ids(args.ids):
            row = conn.execute(query("retry_failed"), {"job_id": job_id}).fetchone()
            total += row[0] if row else 0
    print(f"re-queued {total} failed job(s); workers notified")
    return EXIT_OK


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(settings, "forget") as conn:
        row = conn.execute(query("forget_failed"), {"job_id": args.id}).fetchone()
    print(f"deleted failed job {args.id}" if row and row[0] else "nothing deleted")
    return EXIT_OK


def cmd_flush(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(settings, "flush") as conn:
        row = conn.execute(query("forget_failed"), {"job_id": None}).fetchone()
    print(f"deleted {row[0] if row else 0} failed job(s)")
    return EXIT_OK


def cmd_clear(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(settings, "clear") as conn:
        queued = _status(conn)["queued"]
        if not queued:
            print("the queue is empty")
            return EXIT_OK
        if not args.force:
            if not sys.stdin.isatty():
                raise CommandError(
                    "refusing to clear without confirmation: add --force", EXIT_USAGE
                )
            answer = input(f"delete {queued} queued job(s)? [y/N] ").strip().lower()
            if answer not in {"y", "yes", "o", "oui"}:
                print("nothing deleted")
                return EXIT_OK
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("clear_queue")).fetchall()
    if args.json:
        emit_json(rows)
    else:
        print(table(rows, ["job_id", "course_unit_id", "reason", "execute_after"]))
        print(f"deleted {len(rows)} queued job(s)")
    return EXIT_OK


def cmd_request(args: argparse.Namespace, settings: Settings) -> int:
    try:
        delay = jobs.parse_duration(args.delay)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    with _connect(settings, "request") as conn:
        row = conn.execute(
            query("request"), {"unit": args.id, "reason": args.reason, "delay": delay}
        ).fetchone()
    job_id = row[0] if row else None
    when = "now" if delay == 0 else f"in {jobs.human_duration(delay)}"
    print(f"resync of course unit {args.id} queued as job {job_id}, due {when}")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(settings, "sync") as conn:
        row = conn.execute(query("sync_now"), {"unit": args.id}).fetchone()
    result = row[0] if row else {}
    if args.json:
        emit_json(result)
        return EXIT_OK
    changes = result.get("changes") or {}
    print(f"course unit {result.get('course_unit_id')} ({result.get('code')}) resynced")
    for column, (before, after) in sorted(changes.items()):
        print(f"  {column}: {json.dumps(before)} → {json.dumps(after)}")
    if not changes:
        print("  already consistent")
    return EXIT_OK


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(settings, "check") as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query("drift")).fetchall()
        queued = None
        if args.enqueue and rows:
            found = cur.execute(query("enqueue_drifted")).fetchone()
            queued = found["queued"] if found else 0
    if args.json:
        emit_json({"drifted": rows, "queued": queued})
        return EXIT_OK
    if not rows:
        print("no drift: every course unit matches its elements")
        return EXIT_OK
    print(
        table(
            rows,
            [
                "course_unit_id",
                "code",
                "stored_credits",
                "expected_credits",
                "stored_hours_total",
                "expected_hours_total",
                "stored_elements_count",
                "expected_elements_count",
            ],
        )
    )
    print(
        f"{len(rows)} course unit(s) drifted"
        + (
            f"; {queued} resync(s) queued"
            if queued is not None
            else " (ue-resync check --enqueue queues their resync)"
        )
    )
    return EXIT_OK


def cmd_import_laravel(args: argparse.Namespace, settings: Settings) -> int:
    from ue_resync import laravel_import

    with _connect(settings, "import-laravel") as conn:
        try:
            status, left = laravel_import.run(conn, args)
        except laravel_import.LaravelImportError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    for row in left:
        print(f"ue-resync: {row.table} #{row.row_id} left in place: {row.why}", file=sys.stderr)
    return status


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ue_resync.demo import run_demo

    return run_demo(settings, data_dir=args.data_dir, keep=args.keep)


# -- parsing ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ue-resync",
        description="Keeps course units (UE) consistent with their elements (ECUE).",
    )
    parser.add_argument("--version", action="version", version=f"ue-resync {__version__}")
    parser.add_argument(
        "--env-file",
        type=Path,
        help="read settings from this .env "
        "(a Laravel .env works: DB_HOST, DB_DATABASE, DB_USERNAME…)",
    )
    parser.add_argument("--database-url", help="overrides UE_RESYNC_DATABASE_URL")
    parser.add_argument("--log-format", choices=["auto", "text", "json"])
    parser.add_argument("--log-level")
    parser.add_argument("--log-file", type=Path, help="also log JSON lines here, rotated")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("migrate", cmd_migrate, "apply the pending schema migrations")
    p.add_argument("--print-sql", action="store_true", help="print them for psql instead")

    p = add("work", cmd_work, "run the worker daemon (queue:work)")
    p.add_argument("--sleep", type=float, help="poll fallback, seconds (3)")
    p.add_argument("--tries", type=int, help="attempts per job (3)")
    p.add_argument("--backoff", help="delays between attempts, seconds (30,60,120)")
    p.add_argument("--max-time", type=float, help="exit 0 after this many seconds (3600)")
    p.add_argument("--timeout", type=float, help="seconds per resync transaction (5)")
    p.add_argument("--concurrency", type=int, help="resync transactions at once (2)")
    p.add_argument("--batch-size", type=int, help="UEs per resync transaction (200)")
    p.add_argument(
        "--stop-when-empty",
        action="store_true",
        default=None,
        help="drain the due jobs, then exit 0",
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument("--metrics-bind", help="address for the metrics (127.0.0.1)")

    p = add("monitor", cmd_monitor, "queue figures (queue:monitor)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--check",
        action="store_true",
        help="print the firing alerts; exit 0 OK, 1 warning, 2 critical (Nagios)",
    )
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")

    p = add("failed", cmd_failed, "list failed jobs (queue:failed)")
    p.add_argument("--json", action="store_true")

    p = add("retry", cmd_retry, "re-queue failed jobs now (queue:retry)")
    p.add_argument("ids", nargs="+", metavar="all|ID")

    p = add("forget", cmd_forget, "delete one failed job (queue:forget)")
    p.add_argument("id", type=int)

    add("flush", cmd_flush, "delete every failed job (queue:flush)")

    p = add("clear", cmd_clear, "delete every queued job (queue:clear)")
    p.add_argument("--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")

    p = add("request", cmd_request, "queue a resync of one course unit (dispatch)")
    p.add_argument("id", type=int)
    p.add_argument("--reason", default="manual_trigger")
    p.add_argument("--delay", default="0", help="e.g. 30s, 2m, 1h (0)")

    p = add("sync", cmd_sync, "resync one course unit now (dispatchSync)")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")

    p = add("check", cmd_check, "list drifted course units (and --enqueue their resync)")
    p.add_argument("--enqueue", action="store_true")
    p.add_argument("--json", action="store_true")

    p = add(
        "import-laravel",
        cmd_import_laravel,
        "move Laravel's pending and failed ResyncCourseUnitJob rows into ue-resync "
        "(exit 3: unreadable rows were left in place)",
    )
    from ue_resync.laravel_import import add_arguments

    add_arguments(p)

    p = add("demo", cmd_demo, "run the whole system on an embedded PostgreSQL")
    p.add_argument("--keep", action="store_true", help="leave the server running at the end")
    p.add_argument("--data-dir", type=Path, default=Path(".ue-resync/demo"))
    return parser


_WORK_FLAGS = (
    "sleep",
    "tries",
    "backoff",
    "max_time",
    "timeout",
    "concurrency",
    "batch_size",
    "stop_when_empty",
    "metrics_port",
    "metrics_bind",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {name: getattr(args, name, None) for name in _WORK_FLAGS}
    overrides.update(
        database_url=args.database_url,
        log_format=args.log_format,
        log_level=args.log_level,
        log_file=args.log_file,
    )
    try:
        settings = load(args.env_file, **overrides)
        try:
            log.setup(
                settings.log_format,
                settings.log_level,
                settings.log_file,
                settings.log_rotation,
                settings.log_retention,
            )
        except (ValueError, TypeError, OSError) as exc:
            raise SettingsError(f"invalid log setting: {_first(exc)}") from None
        return int(args.func(args, settings))
    except (SettingsError, migrate.MigrationError) as exc:
        print(f"ue-resync: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, SettingsError) else EXIT_ERROR
    except CommandError as exc:
        print(f"ue-resync: {exc}", file=sys.stderr)
        return exc.status
    except psycopg.errors.UndefinedTable as exc:
        print(
            f"ue-resync: the database is not migrated ({_first(exc)}): run `ue-resync migrate`",
            file=sys.stderr,
        )
    except psycopg.errors.UndefinedFunction as exc:
        print(
            f"ue-resync: the database schema is out of date ({_first(exc)}): "
            "run `ue-resync migrate`",
            file=sys.stderr,
        )
    except psycopg.Error as exc:
        print(f"ue-resync: {_first(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
