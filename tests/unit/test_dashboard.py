"""The Grafana dashboard only charts metrics the daemon really exports."""

import json
import re

from tests.prometheus import DASHBOARD, exported_names


def test_every_dashboard_metric_is_exported():
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for t in panel["targets"]
        for name in re.findall(r"\bue_resync_[a-z0-9_]+", t["expr"])
    }
    assert used, "the dashboard charts nothing"
    missing = used - exported_names()
    assert not missing, missing
