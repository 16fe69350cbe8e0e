"""e2e: ue-resync as a subprocess (support.processes), in the test's tmp_path."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from support import processes


@pytest.fixture
def cli(dsn: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m ue_resync ARGS` against the test database; returns the finished process."""

    def run(
        *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return processes.run(dsn, *args, cwd=tmp_path, env=env, input=input, timeout=timeout)

    return run


# The fixture Laravel application (tests/laravel/), for tests/e2e/test_laravel_*.py.
from tests.laravel.harness import laravel  # noqa: E402, F401
