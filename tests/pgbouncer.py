"""pgbouncer for the tests: support/pgbouncer.py's, skipping a test where it is not installed
(`.ci/run` installs it, so CI never skips)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from support.pgbouncer import NotInstalled, Pgbouncer, running

__all__ = ["Pgbouncer", "started"]


@contextlib.contextmanager
def started(host: str, port: int, mode: str, pool_size: int = 4) -> Iterator[Pgbouncer]:
    try:
        with running(host, port, mode, pool_size) as bouncer:
            yield bouncer
    except NotInstalled as exc:
        pytest.skip(str(exc))
