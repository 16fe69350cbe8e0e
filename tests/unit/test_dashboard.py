"""The Grafana dashboard only charts metrics the daemon really exports."""

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from ue_resync.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "ue-resync-dashboard.json"


def test_every_dashboard_metric_is_exported():
    exported = generate_latest(Metrics().registry).decode()
    names = {
        m.split("{")[0].split(" ")[0] for m in exported.splitlines() if m and not m.startswith("#")
    }
    families = set(re.findall(r"^# TYPE (\S+)", exported, re.M))
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for t in panel["targets"]
        for name in re.findall(r"\bue_resync_[a-z_]+", t["expr"])
    }
    assert used, "the dashboard charts nothing"
    missing = {n for n in used if n not in names and n not in families}
    assert not missing, missing
