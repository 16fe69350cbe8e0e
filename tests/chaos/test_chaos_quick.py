"""The CI-sized chaos run: `python -m bench.chaos --duration 75s`, as a process, must exit 0.

It starts its own PostgreSQL (embedded, listening on loopback TCP, so the PostgreSQL restart
fault is a real `pg_ctl restart -m fast`), or with UE_RESYNC_TEST_DSN set works in a database of
its own on that server, where it cannot restart the server and terminates the daemons' backends
(pg_terminate_backend) instead; the run prints which. Everything it asserts is in
docs/reliability.md; its output is shown when it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DURATION = "75s"

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]


def test_a_ci_sized_chaos_run_loses_nothing(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UE_RESYNC_", "DATABASE_URL", "JOURNAL_STREAM", "NOTIFY_SOCKET"))
    }
    if os.environ.get("UE_RESYNC_TEST_DSN"):
        env["UE_RESYNC_DATABASE_URL"] = os.environ["UE_RESYNC_TEST_DSN"]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    results = tmp_path / "chaos.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.chaos",
            "--duration",
            DURATION,
            "--results",
            str(results),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    shown = f"--- stdout\n{out.stdout[-12000:]}\n--- stderr\n{out.stderr[-6000:]}"
    assert out.returncode == 0, shown
    assert "RESULT: OK" in out.stdout, shown
    figures = json.loads(results.read_text())
    assert figures["drift_at_end"] == 0 and figures["jobs_lost"] == 0, shown
    assert figures["failures"] == [], shown
    faults = figures["faults"]
    for kind in ("sigkill", "sigterm", "pg_restart", "net_cut", "poison"):
        assert faults[kind] >= 1, f"no {kind} fault injected\n{shown}"
    assert figures["element_statements_committed"] > 500, shown
    assert figures["failed_jobs_poison"] >= 1, shown
    # Shown with -rA / on failure: the figures of this run.
    print(out.stdout[out.stdout.find("== chaos run figures") :])
