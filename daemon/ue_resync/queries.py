"""Runtime SQL, one named `.sql` file per query in `queries/`, read once.

`query("name")` returns the text of `queries/name.sql`. Queries take psycopg `%(name)s`
parameters; most call the functions the migrations define, so the logic stays in `sql/`."""

from __future__ import annotations

import functools
from importlib import resources

from psycopg import sql


@functools.cache
def query(name: str) -> sql.SQL:
    text = resources.files("ue_resync").joinpath("queries", f"{name}.sql").read_text("utf-8")
    return sql.SQL(text)  # type: ignore[arg-type]
