"""SQL templates rendered with the mapping: the definitions, the recompute rule's fragments
(`sql/rule.sql`) and the preflight's queries (`sql/preflight.sql`).

A template is SQL with placeholders in braces (literal braces are doubled, `{{}}`), each
substituted through psycopg.sql, never by string concatenation:

    {units} {elements}        the application's tables, schema-qualified identifiers
    {units.KEY}               a mapped column as a bare identifier (a SET target)
    {units.KEY.name}          its name as a string literal (a report key, a message);
                              {units.table.name} the table's, schema-qualified
    {ALIAS.KEY}               the column qualified by a table alias: u."credits"; an optional
                              column the catalogue lacks renders as its neutral value instead
                              (a flag: true, so the UE always syncs; anything else: NULL)
    {units.regclass}          the table's oid, NULL when it does not exist (to_regclass)
    {counted_statuses}        the counted status values, as a list of string literals
    {rule.NAME}, {verify.NAME}  a fragment of sql/rule.sql or sql/verify.sql, itself rendered

The aliases and their table are fixed (ALIASES): every template names a UE row u, w, old, seen or
c, and an element row e, o, n, OLD or NEW. A line that ends with `-- when units.KEY` (or
`elements.KEY`) is left out when that optional column is absent. The output is plain SQL text: a
writer's trigger runs it as static, planned SQL, and its checksum is what the ledger records, so a
mapping change is a definitions change."""

from __future__ import annotations

import functools
import re
import string
from pathlib import Path

from psycopg import sql

from ue_resync.mapping import KEYS, Mapping

ALIASES = {
    **dict.fromkeys(("u", "w", "old", "seen", "c"), "units"),
    **dict.fromkeys(("e", "o", "n", "OLD", "NEW"), "elements"),
}
# What an absent optional column stands for where a template reads it.
_FLAGS = {"sync_credits_with_elements", "sync_hours_with_elements", "auto_sync_enabled"}
# The files of fragments a template may include, {FILE.NAME}.
FRAGMENTS = {"rule": "rule.sql", "verify": "verify.sql"}
_WHEN = re.compile(r"\s*--\s*when\s+(units|elements)\.([a-z_]+)\s*$")
_NAMED = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


class TemplateError(ValueError):
    """A template names something the renderer does not know: a bug in sql/, not in the input."""


def sql_dir() -> Path:
    """`ue_resync/sql` in an installed wheel; the checkout's `sql/` otherwise."""
    packaged = Path(__file__).resolve().parent / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sql"


def sections(text: str) -> dict[str, str]:
    """The named sections of a file of fragments or queries: each `-- name: NAME` header to the
    next, without the comment lines that close it (a `-- Section:` title of the next ones)."""
    parts = _NAMED.split(text)
    found = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = body.strip().splitlines()
        while lines and lines[-1].lstrip().startswith("--"):
            lines.pop()
        found[name] = "\n".join(lines).strip() + "\n"
    return found


@functools.cache
def named(file: str) -> dict[str, str]:
    """The named sections of a file of sql/ (rule.sql, verify.sql, preflight.sql)."""
    return sections((sql_dir() / file).read_text("utf-8"))


def render(template: str, mapping: Mapping) -> str:
    """`template` with every placeholder substituted; TemplateError on an unknown one."""
    kept = []
    for line in template.splitlines(keepends=True):
        when = _WHEN.search(line)
        if when:
            if mapping[(when[1], when[2])] is None:
                continue
            line = line[: when.start()] + ("\n" if line.endswith("\n") else "")
        kept.append(line)
    out: list[str] = []
    for literal, field, spec, conversion in string.Formatter().parse("".join(kept)):
        out.append(literal)
        if field is None:
            continue
        if spec or conversion:
            raise TemplateError(f"placeholder {{{field}}} has a format spec or a conversion")
        head, _, rest = field.partition(".")
        if head in FRAGMENTS:
            # A fragment's lines after its first line up with where it is placed.
            column = len("".join(out).rpartition("\n")[2])
            fragment = render(_section(FRAGMENTS[head], rest), mapping)
            out.append(fragment.rstrip("\n").replace("\n", "\n" + " " * column))
        else:
            out.append(_field(field, mapping).as_string(None))
    return "".join(out)


def query(file: str, name: str, mapping: Mapping) -> str:
    """The query `name` of `file` (e.g. preflight.sql), rendered."""
    return render(_section(file, name), mapping)


def _section(file: str, name: str) -> str:
    """A named section, without the comment lines that open it (they document the source)."""
    try:
        body = named(file)[name]
    except KeyError:
        raise TemplateError(f"{file} has no section {name!r}") from None
    lines = body.splitlines(keepends=True)
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    return "".join(lines)


def _field(field: str, mapping: Mapping) -> sql.Composable:
    head, _, rest = field.partition(".")
    if field in ("units", "elements"):
        return sql.Identifier(*mapping.table(field))
    if field == "counted_statuses":
        return sql.SQL(", ").join(sql.Literal(v) for v in mapping[("elements", "counted")])
    if head in ("units", "elements"):
        if rest == "table.name":
            return sql.Literal(".".join(mapping.table(head)))
        if rest == "regclass":
            name = sql.Identifier(*mapping.table(head)).as_string(None)
            return sql.SQL("pg_catalog.to_regclass({})").format(sql.Literal(name))
        key, _, suffix = rest.partition(".")
        column = _column(head, key, field, mapping)
        if column is None:
            raise TemplateError(
                f"{{{field}}}: {head}.{key} is optional; mark the line `-- when {head}.{key}`"
            )
        if suffix == "name":
            return sql.Literal(column)
        if suffix:
            raise TemplateError(f"unknown placeholder {{{field}}}")
        return sql.Identifier(column)
    if head in ALIASES:
        table = ALIASES[head]
        column = _column(table, rest, field, mapping)
        if column is None:
            return sql.SQL("true" if rest in _FLAGS else "NULL")
        return sql.SQL(head + ".") + sql.Identifier(column)
    raise TemplateError(f"unknown placeholder {{{field}}}")


def _column(table: str, key: str, field: str, mapping: Mapping) -> str | None:
    if (table, key) not in KEYS or key in ("table", "counted", "not_counted"):
        raise TemplateError(f"unknown placeholder {{{field}}}: {table} has no column key {key!r}")
    return mapping.column(table, key)
