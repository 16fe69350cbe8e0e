"""The mapping: every name ue-resync reads or writes in the application's tables, declared once.

The operator declares it in a TOML file kept under version control beside the application's
migrations (it names the application's columns, and changes when they change), given to
`ue-resync migrate --mapping FILE` (or `UE_RESYNC_MAPPING`). Each key is ue-resync's name for
a column and defaults to that same name, so a catalogue with today's names declares nothing:

    [units]                       # the teaching units (UE)
    table = "public.course_units"
    credits = "ects"              # the UE column holding the sum of the elements' credits
    hours_distribution = false    # an optional column this catalogue does not have

    [elements]                    # their constituent elements (ECUE)
    credits = "ects"
    status = "statut"
    counted = ["actif"]           # the status values that count
    not_counted = ["inactif"]     # the status values known not to count
    deleted_at = false            # no soft deletes

`migrate` records the mapping it installed in `resync.mapping` (readable from psql), and a
later `migrate` without a file keeps it: the database, not the file, is what the installed
triggers were rendered from, and a dump carries it with them. `ue-resync mapping` prints it as
TOML. No I/O here but reading the file: the database side is in render.py and migrate.py."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Iterable
from collections.abc import Mapping as MappingType
from pathlib import Path
from typing import Any

# (section, key): (default, optional, what it is). A default of None is a list key.
TOTALS = ("credits", "hours_cm", "hours_td", "hours_tp", "hours_total")

KEYS: dict[tuple[str, str], tuple[Any, bool, str]] = {
    ("units", "table"): ("public.course_units", False, "the teaching units (UE) table"),
    ("units", "id"): ("id", False, "its primary key"),
    ("units", "code"): ("code", True, "a label naming the UE in messages (false: its id)"),
    **{
        ("units", t): (t, False, f"the UE column holding the sum of the elements' {t}")
        for t in TOTALS
    },
    ("units", "elements_count"): ("elements_count", False, "the number of counted elements"),
    ("units", "hours_distribution"): (
        "hours_distribution",
        True,
        "json(b): the share of cm, td and tp in the total hours, in %",
    ),
    ("units", "sync_credits_with_elements"): (
        "sync_credits_with_elements",
        True,
        "boolean: false leaves the UE's credits alone (absent: always synced)",
    ),
    ("units", "sync_hours_with_elements"): (
        "sync_hours_with_elements",
        True,
        "boolean: false leaves the UE's hours alone (absent: always synced)",
    ),
    ("units", "auto_sync_enabled"): (
        "auto_sync_enabled",
        True,
        "boolean: false leaves the UE out of every automatic sync (absent: always synced)",
    ),
    ("units", "last_element_sync"): (
        "last_element_sync",
        True,
        "timestamp of the last sync (added by migrate when missing)",
    ),
    ("units", "last_job_sync"): (
        "last_job_sync",
        False,
        "timestamp of the last sync by the daemon or sync_now (added by migrate when missing)",
    ),
    ("elements", "table"): ("public.course_unit_elements", False, "the elements (ECUE) table"),
    ("elements", "id"): ("id", False, "its primary key"),
    ("elements", "course_unit_id"): ("course_unit_id", False, "the UE an element belongs to"),
    **{("elements", t): (t, False, f"the element's {t}") for t in TOTALS},
    ("elements", "status"): ("status", False, "the element's status"),
    ("elements", "counted"): (["active"], False, "the status values that count"),
    ("elements", "not_counted"): (
        ["inactive", "draft", "archived"],
        False,
        "the status values known not to count (any other value found stops migrate)",
    ),
    ("elements", "deleted_at"): (
        "deleted_at",
        True,
        "soft-delete timestamp: a row with a value does not count (false: no soft deletes)",
    ),
}

# The UE columns migrate adds when they are missing, the way the replaced system's own
# migration added last_job_sync. Every other name must already exist.
ADDED_COLUMNS = ("last_element_sync", "last_job_sync")
LIST_KEYS = {("elements", "counted"), ("elements", "not_counted")}


class MappingError(ValueError):
    """The declaration itself is wrong; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Mapping:
    """The values of every key; an optional column that is absent is None."""

    values: MappingType[tuple[str, str], Any]

    def __getitem__(self, key: tuple[str, str]) -> Any:
        return self.values[key]

    def column(self, section: str, key: str) -> str | None:
        value = self.values[(section, key)]
        assert value is None or isinstance(value, str)
        return value

    def table(self, section: str) -> tuple[str, str]:
        """(schema, table) of `section`."""
        schema, _, name = str(self.values[(section, "table")]).rpartition(".")
        return schema or "public", name

    def without(self, keys: Iterable[tuple[str, str]]) -> Mapping:
        """This mapping with `keys` marked absent: what can be read before migrate adds them."""
        gone = set(keys)
        return Mapping({k: (None if k in gone else v) for k, v in self.values.items()})

    def is_default(self) -> bool:
        return self == DEFAULT

    def rows(self) -> list[tuple[str, str, bool, str]]:
        """(key, value as JSON text, is the default, description), as resync.mapping holds them."""
        return [
            (f"{s}.{k}", json.dumps(self.values[(s, k)]), self.values[(s, k)] == d, note)
            for (s, k), (d, _, note) in KEYS.items()
        ]

    def differences(self, other: Mapping) -> list[str]:
        """One line per key whose value differs from `other`'s ('units.credits: "a" → "b"')."""
        return [
            f"{s}.{k}: {_show(other.values[(s, k)])} → {_show(self.values[(s, k)])}"
            for (s, k) in KEYS
            if self.values[(s, k)] != other.values[(s, k)]
        ]

    def to_toml(self) -> str:
        """The mapping as a file `migrate --mapping` reads back, each key with its meaning."""
        lines = [
            "# ue-resync's mapping: each key is ue-resync's name, each value the application's.",
            "# `ue-resync migrate --mapping FILE` installs it; false marks an optional column",
            "# the catalogue does not have.",
        ]
        for section in ("units", "elements"):
            lines += ["", f"[{section}]"]
            for (s, k), (_, _, note) in KEYS.items():
                if s == section:
                    value = self.values[(s, k)]
                    text = "false" if value is None else json.dumps(value, ensure_ascii=False)
                    lines.append(f"{k} = {text}  # {note}")
        return "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    return "absent" if value is None else json.dumps(value, ensure_ascii=False)


def build(declared: MappingType[str, Any], where: str = "mapping") -> Mapping:
    """A Mapping from a parsed declaration ({"units": {...}, "elements": {...}}); MappingError
    lists every problem at once."""
    problems: list[str] = []
    for section in declared:
        if section not in ("units", "elements"):
            problems.append(f"unknown section [{section}] (use [units] and [elements])")
    values: dict[tuple[str, str], Any] = {}
    for section in ("units", "elements"):
        given = declared.get(section, {})
        if not isinstance(given, dict):
            problems.append(f"[{section}] must be a table of keys")
            given = {}
        for key in given:
            if (section, key) not in KEYS:
                problems.append(f"unknown key {section}.{key}")
        for (s, k), (default, optional, _) in KEYS.items():
            if s != section:
                continue
            value = given.get(k, default)
            problem = _check(s, k, value, optional)
            if problem:
                problems.append(problem)
            values[(s, k)] = None if value is False else value
    problems += _consistency(values)
    if problems:
        raise MappingError(f"{where}: " + "; ".join(problems))
    return Mapping(values)


def _check(section: str, key: str, value: Any, optional: bool) -> str | None:
    name = f"{section}.{key}"
    if (section, key) in LIST_KEYS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"{name} must be a list of strings"
        if key == "counted" and not value:
            return f"{name} must name at least one status value"
        return None
    if value is False:
        return None if optional else f"{name} is required (it cannot be false)"
    if not isinstance(value, str) or not value.strip():
        return f"{name} must be a column name{' or false' if optional else ''}"
    if key == "table" and value.count(".") > 1:
        return f"{name} must be table or schema.table, got {value!r}"
    return None


def _consistency(values: dict[tuple[str, str], Any]) -> list[str]:
    problems = []
    lists = [v if isinstance(v, list) else [] for v in (values[k] for k in sorted(LIST_KEYS))]
    overlap = {v for v in lists[0] if isinstance(v, str)} & {
        v for v in lists[1] if isinstance(v, str)
    }
    if overlap:
        problems.append(
            "elements.counted and elements.not_counted both list "
            + ", ".join(repr(v) for v in sorted(overlap))
        )
    for section in ("units", "elements"):
        seen: dict[str, str] = {}
        for (s, k), value in values.items():
            if s != section or k == "table" or (s, k) in LIST_KEYS or not isinstance(value, str):
                continue
            if value in seen:
                problems.append(f"{s}.{seen[value]} and {s}.{k} both name column {value!r}")
            seen[value] = k
    if values[("units", "table")] == values[("elements", "table")]:
        problems.append("units.table and elements.table name the same table")
    return problems


def load(path: Path) -> Mapping:
    """The mapping declared in the TOML file `path`."""
    try:
        declared = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise MappingError(f"cannot read mapping {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path} is not valid TOML: {exc}") from None
    return build(declared, str(path))


def from_rows(rows: Iterable[tuple[str, Any]]) -> Mapping:
    """The mapping resync.mapping holds ((key, value) rows); keys it lacks take their default."""
    declared: dict[str, dict[str, Any]] = {"units": {}, "elements": {}}
    for key, value in rows:
        section, _, name = key.partition(".")
        if (section, name) in KEYS:
            declared[section][name] = False if value is None else value
    return build(declared, "resync.mapping")


DEFAULT = build({})
