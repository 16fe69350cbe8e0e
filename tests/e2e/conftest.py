from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest


def cli_env(dsn: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UE_RESYNC_", "DATABASE_URL"))}
    if dsn is not None:
        env["UE_RESYNC_DATABASE_URL"] = dsn
    env["UE_RESYNC_LOG_FORMAT"] = "text"
    env.update(extra)
    return env


@pytest.fixture
def cli(dsn: str, tmp_path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m ue_resync ARGS` against the test database; returns the finished process."""

    def run(
        *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ue_resync", *args],
            env=env if env is not None else cli_env(dsn),
            cwd=tmp_path,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


# The fixture Laravel application (tests/laravel/), for tests/e2e/test_laravel_*.py.
from tests.laravel.harness import laravel  # noqa: E402, F401
