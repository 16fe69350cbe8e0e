"""pgbouncer for the tests: support/pgbouncer.py's, or the test skips (fails under CI, which
installs it: tests/tools.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from support import pgbouncer
from support.pgbouncer import Pgbouncer, running
from tests import tools

__all__ = ["Pgbouncer", "started"]


@contextlib.contextmanager
def started(host: str, port: int, mode: str, pool_size: int = 4) -> Iterator[Pgbouncer]:
    if pgbouncer.binary() is None:
        tools.unavailable("pgbouncer is not installed (apt-get install pgbouncer)")
    with running(host, port, mode, pool_size) as bouncer:
        yield bouncer
