"""The `ue-resync` command line: its parser and `main`; each subcommand is one function of
commands.py. The old artisan commands map as queue:work → work, queue:monitor → monitor,
queue:failed → failed, queue:retry → retry, queue:forget → forget, queue:flush → flush,
queue:clear → clear, dispatch → request, dispatchSync → sync. Errors are one line on stderr and a
non-zero exit status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from ue_resync import __version__, installation, laravel_import, log, migrate
from ue_resync.commands import (
    EXIT_ERROR,
    EXIT_USAGE,
    CommandError,
    cmd_clear,
    cmd_demo,
    cmd_failed,
    cmd_flush,
    cmd_forget,
    cmd_import_laravel,
    cmd_monitor,
    cmd_request,
    cmd_retry,
    cmd_sync,
    cmd_work,
)
from ue_resync.install_commands import cmd_check, cmd_mapping, cmd_migrate
from ue_resync.log import one_line
from ue_resync.settings import Settings, SettingsError, load

# Adds a subcommand: its name, its function in commands.py, its one-line help; the subparser.
AddCommand = Callable[[str, Callable[..., int], str], argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    """The options every command takes, then the subcommands, in the order the help lists them."""
    parser = argparse.ArgumentParser(
        prog="ue-resync",
        description="Keeps course units (UE) consistent with their elements (ECUE).",
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    _install_commands(add)
    _work_command(add)
    _queue_commands(add)
    _unit_commands(add)
    _one_off_commands(add)
    return parser


def _global_options(parser: argparse.ArgumentParser) -> None:
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


def _install_commands(add: AddCommand) -> None:
    """migrate and mapping."""
    p = add(
        "migrate",
        cmd_migrate,
        "check the application's tables against the mapping, then install or upgrade",
    )
    p.add_argument(
        "--mapping", type=Path, help="the mapping file (TOML; default: the installed one)"
    )
    p.add_argument(
        "--preview",
        action="store_true",
        help="show what migrate would change and what the first sync would write; change nothing",
    )
    p.add_argument(
        "--accept-resync",
        action="store_true",
        help="on a first install, go ahead even though the first sync changes UEs "
        "(and queue their resync)",
    )
    p.add_argument("--print-sql", action="store_true", help="print the SQL for psql instead")
    p.add_argument(
        "--verify",
        action="store_true",
        help="check the catalogue against what ue-resync installs, change nothing "
        "(exit 3: differences, one line each)",
    )

    p = add("mapping", cmd_mapping, "print the mapping (TOML): the file's, the installed one")
    p.add_argument("--mapping", type=Path, help="a mapping file to check and print")


def _work_command(add: AddCommand) -> None:
    """The daemon; each flag's help shows its default from settings.py."""
    p = add("work", cmd_work, "run the worker daemon (queue:work)")
    for flag, kind, text in (
        ("--sleep", float, "poll fallback, seconds"),
        ("--tries", int, "attempts per job"),
        ("--backoff", str, "delays between attempts, seconds"),
        ("--max-time", float, "exit 0 after this many seconds, 0 = never"),
        ("--timeout", float, "seconds per resync transaction"),
        ("--concurrency", int, "resync transactions at once"),
        ("--batch-size", int, "UEs per resync transaction"),
    ):
        p.add_argument(flag, type=kind, help=f"{text} ({_default(flag[2:].replace('-', '_'))})")
    p.add_argument(
        "--stop-when-empty",
        action="store_true",
        default=None,
        help="drain the due jobs, then exit 0",
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument("--metrics-bind", help=f"address for the metrics ({_default('metrics_bind')})")


def _queue_commands(add: AddCommand) -> None:
    """The artisan queue:* commands: monitor, failed, retry, forget, flush, clear."""
    p = add("monitor", cmd_monitor, "queue figures (queue:monitor)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--check",
        action="store_true",
        help="print the firing alerts; exit 0 OK, 1 warning, 2 critical (Nagios)",
    )
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")

    p = add("failed", cmd_failed, "list failed jobs (queue:failed)")
    p.add_argument("--unit", type=int, metavar="ID", help="only this course unit's failed jobs")
    p.add_argument("--json", action="store_true")

    _failed_jobs(add("retry", cmd_retry, "re-queue failed jobs now (queue:retry)"))
    _failed_jobs(add("forget", cmd_forget, "delete failed jobs (queue:forget)"))

    add("flush", cmd_flush, "delete every failed job (queue:flush)")

    p = add("clear", cmd_clear, "delete every queued job (queue:clear)")
    p.add_argument("--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")


def _failed_jobs(p: argparse.ArgumentParser) -> None:
    """The failed jobs `retry` and `forget` act on: job ids or 'all', or a UE's."""
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "ids",
        nargs="*",
        default=[],
        metavar="all|JOB_ID",
        help="job ids, the job_id column of `ue-resync failed`; or all",
    )
    target.add_argument(
        "--unit", type=int, metavar="ID", help="every failed job of this course unit"
    )


def _unit_commands(add: AddCommand) -> None:
    """What acts on course units: request, sync, check."""
    p = add("request", cmd_request, "queue a resync of one course unit (dispatch)")
    p.add_argument("id", type=int)
    p.add_argument("--reason", default="manual_trigger")
    p.add_argument(
        "--delay",
        default="0",
        help="due this long from now: 90, 30s, 2m, 1h (0); never negative, so `--delay -5m` is "
        "refused",
    )

    p = add("sync", cmd_sync, "resync one course unit now (dispatchSync)")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")

    p = add(
        "check",
        cmd_check,
        "list drifted course units and the columns that differ (exit 3), or --enqueue their resync",
    )
    p.add_argument("--enqueue", action="store_true")
    p.add_argument("--json", action="store_true")


def _one_off_commands(add: AddCommand) -> None:
    """import-laravel, run once at the cutover, and demo."""
    p = add(
        "import-laravel",
        cmd_import_laravel,
        "move Laravel's pending and failed ResyncCourseUnitJob rows into ue-resync "
        "(exit 3: unreadable rows were left in place)",
    )
    laravel_import.add_arguments(p)

    p = add("demo", cmd_demo, "run the whole system on an embedded PostgreSQL")
    p.add_argument("--keep", action="store_true", help="leave the server running at the end")
    p.add_argument("--data-dir", type=Path, default=Path(".ue-resync/demo"))


def _default(name: str) -> str:
    """A setting's default as the help shows it, from the one place it is set (settings.py)."""
    value = Settings.model_fields[name].default
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


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
            raise SettingsError(f"invalid log setting: {one_line(exc)}") from None
        return int(args.func(args, settings))
    except (SettingsError, migrate.MigrationError) as exc:
        print(f"ue-resync: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, SettingsError) else EXIT_ERROR
    except CommandError as exc:
        print(f"ue-resync: {exc}", file=sys.stderr)
        return exc.status
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        print(
            f"ue-resync: the database is not migrated ({one_line(exc)}): run `ue-resync migrate`",
            file=sys.stderr,
        )
    except psycopg.errors.InsufficientPrivilege as exc:
        # The server's own refusal names the object; ue-resync's (a role it cannot create) says
        # what to run itself.
        hint = (
            ': the role lacks a right its command needs (docs/operations.md, "Give each program '
            "its own login role\"); if ue-resync's roles lost theirs, "
            f"{installation.REPAIR}"
        )
        message = one_line(exc)
        print(
            f"ue-resync: {message}{hint if message.startswith('permission denied') else ''}",
            file=sys.stderr,
        )
    except psycopg.errors.UndefinedFunction as exc:
        print(
            f"ue-resync: the database schema is out of date ({one_line(exc)}): "
            "run `ue-resync migrate`",
            file=sys.stderr,
        )
    except psycopg.Error as exc:
        print(f"ue-resync: {one_line(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR
