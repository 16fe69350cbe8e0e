"""What migrate reads of the application's tables before it changes anything: the check of the
tables against the mapping (a refusal lists every difference at once), and the preview of what
the first sync would write. Read-only; the queries are in sql/preflight.sql."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ue_resync import render
from ue_resync.mapping import ADDED_COLUMNS, KEYS, TOTALS, Mapping
from ue_resync.output import number

# The type category each mapped column must have (pg_type.typcategory), and how to say it.
_NUMBER = ("N", "a number")
_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    **{(s, t): _NUMBER for s in ("units", "elements") for t in TOTALS},
    ("units", "elements_count"): _NUMBER,
    ("units", "sync_credits_with_elements"): ("B", "a boolean"),
    ("units", "sync_hours_with_elements"): ("B", "a boolean"),
    ("units", "auto_sync_enabled"): ("B", "a boolean"),
    ("units", "last_element_sync"): ("D", "a date and time"),
    ("units", "last_job_sync"): ("D", "a date and time"),
}
_INTEGERS = {"smallint", "integer", "bigint"}
_JSON = {"json", "jsonb", "text"}


@dataclasses.dataclass(frozen=True)
class Report:
    """The outcome of the check: `problems` refuse the install, `warnings` do not, `added` are
    the UE columns migrate will add ((key, column))."""

    problems: list[str]
    warnings: list[str]
    added: list[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Change:
    """A UE the first sync would change."""

    course_unit_id: int
    code: str | None
    differences: dict[str, list[Any]]
    counted: int
    elements: int
    deleted: int
    by_status: dict[str, int]


@dataclasses.dataclass(frozen=True)
class Preview:
    changes: list[Change]
    counted: list[str]

    @property
    def per_column(self) -> dict[str, int]:
        """How many UEs would change, per column (the application's names)."""
        return dict(Counter(c for change in self.changes for c in change.differences))


def _qualified(mapping: Mapping, section: str) -> str:
    schema, table = mapping.table(section)
    return f"{schema}.{table}"


def check(conn: psycopg.Connection, mapping: Mapping) -> Report:
    """The application's tables against `mapping`: every difference, at once."""
    problems: list[str] = []
    warnings: list[str] = []
    added: list[tuple[str, str]] = []
    columns = {section: _columns(conn, mapping, section) for section in ("units", "elements")}
    for section, found in columns.items():
        if not found:
            problems.append(
                f"table {_qualified(mapping, section)} does not exist (mapping {section}.table)"
            )
            continue
        for (s, key), _ in KEYS.items():
            if s != section or key in ("table", "counted", "not_counted"):
                continue
            name = mapping.column(s, key)
            if name is None:
                continue
            where = f"{_qualified(mapping, s)}.{name}"
            if name not in found:
                if s == "units" and key in ADDED_COLUMNS:
                    added.append((key, name))
                else:
                    problems.append(f"{where} does not exist (mapping {s}.{key})")
                continue
            problem = _kind(s, key, where, *found[name])
            if problem:
                problems.append(problem)
    if columns["elements"] and not problems:
        problems += _statuses(conn, mapping)
        if not _has_leading_index(conn, mapping):
            schema, table = mapping.table("elements")
            parent = mapping.column("elements", "course_unit_id")
            warnings.append(
                f"no index of {schema}.{table} leads with {parent}: every sync reads the whole "
                f"table; create one: CREATE INDEX CONCURRENTLY ON {schema}.{table} ({parent})"
            )
    return Report(problems, warnings, added)


def _columns(
    conn: psycopg.Connection, mapping: Mapping, section: str
) -> dict[str, tuple[str, str]]:
    schema, table = mapping.table(section)
    rows = conn.execute(
        render.query("preflight.sql", "columns", mapping), {"schema": schema, "table": table}
    ).fetchall()
    return {name: (type_, category) for name, type_, category in rows}


def _kind(section: str, key: str, where: str, type_: str, category: str) -> str | None:
    if key in ("id", "course_unit_id"):
        if type_ not in _INTEGERS:
            return f"{where} is {type_}, not an integer (mapping {section}.{key})"
        return None
    if key == "hours_distribution":
        if type_ not in _JSON:
            return f"{where} is {type_}, not json or jsonb (mapping {section}.{key})"
        return None
    wanted = _KINDS.get((section, key))
    if wanted and category != wanted[0]:
        return f"{where} is {type_}, not {wanted[1]} (mapping {section}.{key})"
    return None


def _statuses(conn: psycopg.Connection, mapping: Mapping) -> list[str]:
    known = set(mapping[("elements", "counted")]) | set(mapping[("elements", "not_counted")])
    found = conn.execute(render.query("preflight.sql", "statuses", mapping)).fetchall()
    unknown = [(status, n) for status, n in found if status is not None and status not in known]
    if not unknown:
        return []
    listed = ", ".join(f"{json.dumps(s, ensure_ascii=False)} ({n} rows)" for s, n in unknown)
    return [
        f"{_qualified(mapping, 'elements')}.{mapping.column('elements', 'status')} holds "
        f"status values the mapping neither counts nor lists as not counted: {listed} "
        "(add each to elements.counted or elements.not_counted)"
    ]


def _has_leading_index(conn: psycopg.Connection, mapping: Mapping) -> bool:
    schema, table = mapping.table("elements")
    row = conn.execute(
        render.query("preflight.sql", "leading_index", mapping),
        {"schema": schema, "table": table, "column": mapping.column("elements", "course_unit_id")},
    ).fetchone()
    return bool(row and row[0])


def preview(conn: psycopg.Connection, mapping: Mapping, report: Report) -> Preview:
    """What the first sync would write, UE by UE (`report`: the check's, whose columns still to
    add are read as absent)."""
    readable = mapping.without(("units", key) for key, _ in report.added)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(render.query("preflight.sql", "preview", readable)).fetchall()
    changes = [
        Change(
            course_unit_id=int(r["course_unit_id"]),
            code=r["code"],
            differences=r["differences"],
            counted=int(r["counted"] or 0),
            elements=int(r["elements"] or 0),
            deleted=int(r["deleted"] or 0),
            by_status=r["by_status"],
        )
        for r in rows
    ]
    return Preview(changes, list(mapping[("elements", "counted")]))


def describe(change: Change, counted: list[str]) -> str:
    """`UE 1 (INF101): credits 6 → 0, elements_count 3 → 0; 0 of 3 elements counted (status
    'actif': 3; counted: 'active')`."""
    name = f"UE {change.course_unit_id}" + (f" ({change.code})" if change.code else "")
    moved = ", ".join(
        f"{column} {number(a)} → {number(b)}" for column, (a, b) in change.differences.items()
    )
    statuses = "; ".join(
        f"status {_quote(status)}: {n}" for status, n in sorted(change.by_status.items())
    )
    extra = [statuses] if statuses else []
    if change.deleted:
        extra.append(f"soft-deleted: {change.deleted}")
    extra.append("counted: " + ", ".join(_quote(s) for s in counted))
    return (
        f"{name}: {moved}; {change.counted} of {change.elements} elements counted "
        f"({'; '.join(extra)})"
    )


def _quote(status: str) -> str:
    return "'" + status.replace("'", "''") + "'"
