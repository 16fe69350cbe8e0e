"""Runtime SQL, one named `.sql` file per query in `queries/`, read once.

`query("name")` returns the text of `queries/name.sql`. Queries take psycopg `%(name)s`
parameters; most call the functions the migrations define, so the logic stays in `sql/`."""

from __future__ import annotations

import functools
from importlib import resources

from psycopg import sql


@functools.cache
def text(name: str) -> str:
    """The raw text of `queries/name.sql`, for drivers that take `$1` placeholders."""
    return resources.files("ue_resync").joinpath("queries", f"{name}.sql").read_text("utf-8")


def query(name: str) -> sql.SQL:
    """`queries/name.sql` as a psycopg query (`%(name)s` parameters)."""
    return sql.SQL(text(name))
