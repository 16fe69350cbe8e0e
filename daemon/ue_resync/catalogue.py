"""The application's tables with the default mapping's names (catalogue.sql): what the demo
creates before `migrate`, and what the tests and the benchmarks create through support/. A user's
database has its own: ue-resync never creates them there."""

from __future__ import annotations

from importlib import resources

import psycopg


def create_tables(conn: psycopg.Connection) -> None:
    """Create course_units and course_unit_elements, empty."""
    text = resources.files("ue_resync").joinpath("catalogue.sql").read_text("utf-8")
    conn.execute(text.encode("utf-8"))
