"""e2e: ue-resync as a subprocess (support.processes), in the test's tmp_path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from support import processes, replication
from tests import tools


@pytest.fixture
def cli(dsn: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m ue_resync ARGS` against the test database; returns the finished process."""

    def run(
        *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return processes.run(dsn, *args, cwd=tmp_path, env=env, input=input, timeout=timeout)

    return run


@pytest.fixture(scope="module")
def bindir() -> Path:
    """The server binaries of the suite's own server, for the tests that start servers of their
    own (replication, failover, dump and restore): the system PostgreSQL's when
    UE_RESYNC_TEST_DSN is set, the embedded wheel's otherwise."""
    if os.environ.get("UE_RESYNC_TEST_DSN"):
        found = replication.system_bindir()
        if found is None:
            tools.unavailable(
                "the system PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/pg_ctl) are "
                "not installed (apt-get install postgresql)"
            )
        return found
    return replication.embedded_bindir()


# The fixture Laravel application (tests/laravel/), for tests/e2e/test_laravel_*.py.
from tests.laravel.harness import laravel  # noqa: E402, F401
