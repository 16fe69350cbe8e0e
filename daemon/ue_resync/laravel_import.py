"""`ue-resync import-laravel`: the cutover of Laravel's queue. Each pending ResyncCourseUnitJob
row of `jobs` becomes a resync job of its UE (its reason, due at its available_at, coalesced as
usual); each such row of `failed_jobs` becomes a failed job (`ue-resync failed` lists it with
Laravel's exception text and failed_at, `ue-resync retry` re-runs it). Imported rows leave
Laravel's tables in the same transaction; rows of other job classes are not touched; a row
whose payload cannot be read is reported by id and left where it is."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from typing import Any

import psycopg
from psycopg import sql

from ue_resync.laravel_payload import (
    LaravelJob,
    PayloadError,
    exception_messages,
    exception_summary,
    read_job,
    sqlstate_of,
)
from ue_resync.queries import query

JOB_CLASS = "App\\Jobs\\ResyncCourseUnitJob"
EXIT_OK, EXIT_LEFT = 0, 3  # 3: imported what it could, some rows were left in place


class LaravelImportError(Exception):
    """A reason the import cannot start (a missing table); one line."""


@dataclasses.dataclass(frozen=True, slots=True)
class Left:
    table: str
    row_id: int
    why: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs-table", default="jobs", help="Laravel's queue table (jobs)")
    parser.add_argument(
        "--failed-table", default="failed_jobs", help="Laravel's failed jobs table (failed_jobs)"
    )
    parser.add_argument("--job-class", default=JOB_CLASS, help=f"the job class ({JOB_CLASS})")
    parser.add_argument(
        "--timezone",
        default="UTC",
        help="Laravel's app.timezone, in which failed_at was written (UTC)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be imported, change nothing"
    )


def _identifier(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split(".", 1))


def _check_tables(conn: psycopg.Connection, *names: str) -> None:
    for name in names:
        row = conn.execute(query("laravel_table_exists"), {"name": name}).fetchone()
        if not row or not row[0]:
            raise LaravelImportError(
                f"table {name!r} does not exist (see --jobs-table, --failed-table)"
            )


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _read(table: str, row_id: int, payload: str, job_class: str, left: list[Left]) -> Any:
    try:
        return read_job(payload, job_class)
    except PayloadError as exc:
        left.append(Left(table, row_id, str(exc)))
        return None


def _import_pending(
    conn: psycopg.Connection, args: argparse.Namespace, short: str, left: list[Left]
) -> list[str]:
    lines: list[str] = []
    done: list[int] = []
    rows = conn.execute(
        query("laravel_pending_jobs").format(jobs=_identifier(args.jobs_table)),
        {"short_name": short},
    ).fetchall()
    for row_id, payload, attempts, reserved, due in rows:
        job: LaravelJob | None = _read(args.jobs_table, row_id, payload, args.job_class, left)
        if job is None:
            continue
        reason = job.reason[:100]
        found = conn.execute(
            query("laravel_enqueue"), {"unit": job.course_unit_id, "reason": reason, "due": due}
        ).fetchone()
        assert found is not None
        job_id, coalesced = found
        note = (" (reserved by a worker: stop queue:work first)" if reserved else "") + (
            f" (after {attempts} attempt(s))" if attempts else ""
        )
        into = f"joined job {job_id}" if coalesced else f"job {job_id}"
        lines.append(
            f"  {args.jobs_table} #{row_id}: course unit {job.course_unit_id}, reason "
            f"{reason!r}, due {_when(due)} -> {into}{note}"
        )
        done.append(row_id)
    if done:
        conn.execute(
            query("laravel_delete_rows").format(table=_identifier(args.jobs_table)),
            {"ids": done},
        )
    return lines


def _import_failed(
    conn: psycopg.Connection, args: argparse.Namespace, short: str, left: list[Left]
) -> list[str]:
    lines: list[str] = []
    done: list[int] = []
    rows = conn.execute(
        query("laravel_failed_jobs").format(failed_jobs=_identifier(args.failed_table)),
        {"short_name": short, "timezone": args.timezone},
    ).fetchall()
    for row_id, uuid, connection, queue, payload, exception, failed_at in rows:
        job: LaravelJob | None = _read(args.failed_table, row_id, payload, args.job_class, left)
        if job is None:
            continue
        kind, message = exception_summary(exception or "")
        found = conn.execute(
            query("laravel_import_failed"),
            {
                "unit": job.course_unit_id,
                "reason": job.reason[:100],
                "attempts": job.max_tries or 1,
                "failed_at": failed_at,
                "uuid": uuid,
                "connection": connection,
                "queue": queue,
                "exception": exception or "",
                "exception_type": kind,
                "exception_message": message,
            },
        ).fetchone()
        assert found is not None
        run = conn.execute(
            query("laravel_start_run"),
            {"job_id": found[0], "unit": job.course_unit_id, "reason": job.reason[:100]},
        ).fetchone()
        assert run is not None
        conn.execute(
            query("laravel_fail_run"),
            {
                "run_id": run[0],
                "error": exception_messages(exception or ""),
                "sqlstate": sqlstate_of(exception or ""),
            },
        )
        lines.append(
            f"  {args.failed_table} #{row_id}: course unit {job.course_unit_id}, failed "
            f"{_when(failed_at)} ({kind}) -> failed job {found[0]}"
        )
        done.append(row_id)
    if done:
        conn.execute(
            query("laravel_delete_rows").format(table=_identifier(args.failed_table)),
            {"ids": done},
        )
    return lines


def run(conn: psycopg.Connection, args: argparse.Namespace) -> tuple[int, list[Left]]:
    """Import in one transaction (rolled back with --dry-run); prints what it did. Returns
    the exit status and the rows left in place, which the caller reports."""
    _check_tables(conn, args.jobs_table, args.failed_table)
    short = args.job_class.rsplit("\\", 1)[-1]
    left: list[Left] = []
    with conn.transaction(force_rollback=args.dry_run):
        pending = _import_pending(conn, args, short, left)
        failed = _import_failed(conn, args, short, left)
    verb = "would import" if args.dry_run else "imported"
    for count, kind, table, lines in (
        (len(pending), "pending", args.jobs_table, pending),
        (len(failed), "failed", args.failed_table, failed),
    ):
        print(f"{verb} {count} {kind} {short} row(s) from {table}")
        for line in lines:
            print(line)
    if args.dry_run:
        print("dry run: nothing changed")
    return (EXIT_LEFT if left else EXIT_OK), left
