"""pytest's handle on the fixture Laravel application (tests/laravel/): each call is one
`php artisan.php ...` subprocess against the test database, configured through Laravel's .env
names (DB_HOST, DB_PORT, DB_DATABASE, DB_USERNAME, DB_PASSWORD)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from support.env import scrubbed_env
from tests import tools

APP = Path(__file__).resolve().parent
ARTISAN = APP / "artisan.php"
ILLUMINATE = Path("/usr/share/php/Illuminate/autoload.php")


def require_php() -> str:
    """The php binary, with Debian's Laravel beside it, as tests/tools.py requires them."""
    install = "apt-get install --no-install-recommends php-cli php-pgsql php-laravel-framework"
    php = tools.require("php", install)
    if not ILLUMINATE.exists():
        tools.unavailable(f"php-laravel-framework is not installed ({install})")
    return php


class PhpError(AssertionError):
    """The PHP side failed: its stderr is the message."""


class Laravel:
    """The fixture application, pointed at one database."""

    def __init__(self, php: str, dsn: str, **env: str) -> None:
        params = conninfo_to_dict(dsn)
        self.php = php
        self.dsn = dsn
        self.env = {
            **{k: v for k, v in scrubbed_env().items() if not k.startswith(("DB_", "RESYNC_"))},
            "DB_HOST": str(params.get("host") or "127.0.0.1"),
            "DB_PORT": str(params.get("port") or 5432),
            "DB_DATABASE": str(params["dbname"]),
            "DB_USERNAME": str(params.get("user") or "postgres"),
            "DB_PASSWORD": str(params.get("password") or ""),
            "QUEUE_CONNECTION": "database",
            **env,
        }

    def with_env(self, **env: str) -> Laravel:
        return Laravel(self.php, self.dsn, **{**self.env, **env})

    def with_observer(self) -> Laravel:
        """The application as it was before the cutover: the old observer registered."""
        return self.with_env(RESYNC_OBSERVER="1")

    def artisan(self, *args: str, timeout: float = 120) -> Any:
        done = subprocess.run(
            [self.php, str(ARTISAN), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=APP,
        )
        if done.returncode != 0:
            raise PhpError(f"php artisan.php {' '.join(args)}: {done.stderr.strip()}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def call(self, scenario: str, timeout: float = 120, **args: Any) -> Any:
        return self.artisan("call", scenario, json.dumps(args), timeout=timeout)

    def work(self, *flags: str) -> dict[str, int]:
        """Laravel's queue worker until the queue is empty (--fast-forward: no waiting)."""
        result: dict[str, int] = self.artisan("queue:work", "--stop-when-empty", *flags)
        return result


@pytest.fixture
def laravel(dsn: str) -> Iterator[Laravel]:
    """The application on the migrated test database, with Laravel's jobs and failed_jobs."""
    app = Laravel(require_php(), dsn)
    app.artisan("migrate", "--queue-only")
    yield app
