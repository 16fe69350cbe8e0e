"""What some tests need beyond Python and the server under test: pgbouncer, systemd-analyze,
PHP with Debian's Laravel, Prometheus and promtool, PostgreSQL's server binaries and tools.

One rule for all of them: without it, a test skips on a developer's machine, saying what is
missing and how to install it; under CI (`CI` set, as .ci/run does, which installs them all) the
same test fails instead, so nothing is skipped there without a reason of its own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(what: str) -> NoReturn:
    """`what` (missing or unusable, and how to get it) stops the test: a failure under CI, a
    skip elsewhere."""
    if in_ci():
        pytest.fail(f"{what}: CI never skips this test (.ci/run installs it)", pytrace=False)
    pytest.skip(f"{what}; skipped because CI is not set")


def require(name: str, install: str, also: Iterable[str] = ()) -> str:
    """The path of the executable `name` (on PATH, else the first of `also` that exists), or
    `unavailable` saying `install`."""
    found = shutil.which(name) or next((p for p in also if os.access(p, os.X_OK)), None)
    if found is None:
        unavailable(f"{name} is not installed ({install})")
    return found
