"""What the commands print: JSON for scripts, aligned tables and the queue summary for people.
Formatting only: the rows come in as arguments."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ue_resync.durations import human_duration

FAILED_COLUMNS = ("job_id", "course_unit_id", "reason", "attempts", "last_error", "failed_at")


def plain(value: Any) -> Any:
    """A value JSON can hold: numbers for decimals and intervals, ISO text for timestamps."""
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral() else int(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value


def number(value: Any) -> str:
    """A value of a UE column for people: 6 rather than 6.0 or 6.00, JSON for the rest."""
    value = plain(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def emit_json(data: Any) -> None:
    print(json.dumps(data, default=plain, ensure_ascii=False, indent=2))


def cell(value: Any) -> str:
    """A value as a table shows it: '-' for NULL, local time to the second, long text cut."""
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    value = plain(value)
    text = str(value)
    return text if len(text) <= 70 else text[:67] + "..."


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Aligned columns, header underlined; numbers right-aligned."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
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


def paint(text: str, colour: str) -> str:
    """ANSI colour on a terminal, plain text otherwise."""
    codes = {"red": "31", "yellow": "33", "green": "32", "bold": "1"}
    return f"\033[{codes[colour]}m{text}\033[0m" if sys.stdout.isatty() else text


def monitor_text(status: dict[str, Any]) -> str:
    """The queue summary of `ue-resync monitor`, from the row of the `queue_status` query."""
    failed = status["failed_last_hour"]
    lines = [
        paint("ue-resync queue", "bold") + f"  ({dt.datetime.now().strftime('%H:%M:%S')})",
        f"  queued   {status['queued']:>7}   due {status['due']}, delayed {status['delayed']}",
        f"  running  {status['running']:>7}",
        f"  failed   {status['failed_total']:>7}   "
        + (paint(f"{failed} in the last hour", "red") if failed else "0 in the last hour"),
        f"  oldest due job waiting   {human_duration(status['oldest_due_age_seconds'])}",
        f"  run time (last hour)     avg {human_duration(status['run_time_avg_seconds'])}, "
        f"p95 {human_duration(status['run_time_p95_seconds'])}",
        f"  live workers             {status['live_workers']}",
    ]
    return "\n".join(lines)


def failed_text(rows: Sequence[dict[str, Any]], unit: int | None = None) -> str:
    """The failed jobs of `ue-resync failed` (of UE `unit`, when given), from the rows of the
    `failed_jobs` query."""
    if rows:
        return table(rows, FAILED_COLUMNS)
    return f"course unit {unit} has no failed job" if unit is not None else "no failed jobs"


def job_and_unit(row: dict[str, Any]) -> str:
    """`job 12 (course unit 42)`: both ids of a job, as operators look for either."""
    unit = row.get("course_unit_id")
    return f"job {row['job_id']} " + (
        f"(course unit {unit})" if unit is not None else "(no course unit)"
    )
