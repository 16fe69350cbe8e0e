"""Runtime SQL: every query the daemon and the command line send, named, in `queries.sql`
(one `-- name: NAME` header and a line saying what it does, each), read once.

`query("name")` is the query as psycopg takes it (`%(name)s` parameters); `text("name")` the raw
text, for pgqueuer's driver and its `$1` placeholders. Most queries call the functions the
definitions install, so the logic stays in `sql/`."""

from __future__ import annotations

import functools
from importlib import resources

from psycopg import sql

from ue_resync.render import sections


@functools.cache
def _all() -> dict[str, str]:
    return sections(resources.files("ue_resync").joinpath("queries.sql").read_text("utf-8"))


def text(name: str) -> str:
    """The raw text of the query `name`."""
    try:
        return _all()[name]
    except KeyError:
        raise KeyError(f"queries.sql has no query named {name!r}") from None


def query(name: str) -> sql.SQL:
    """The query `name` as a psycopg query."""
    return sql.SQL(text(name))
