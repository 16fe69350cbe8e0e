"""Fixtures of the integration tier."""

from __future__ import annotations

import pytest

from support import catalogue
from tests.deferral import session


@pytest.fixture
def locked_unit(conn, dsn):
    """A unit with one element (credits 3, 10/5/5), its row held FOR UPDATE by session B."""
    u = catalogue.unit(conn)
    e = catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    with session(dsn) as holder:
        holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (u,))
        yield u, e, holder
        holder.rollback()
