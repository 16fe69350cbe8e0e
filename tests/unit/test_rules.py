"""The Prometheus alerting rules: valid for promtool, each alert unit-tested at and above its
threshold, each with a summary, a severity and a runbook section that exists."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml

from tests.prometheus import OPERATIONS, RULE_TESTS, RULES, exported_names, tool


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of `markdown`."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_promtool_checks_the_rules():
    out = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(yaml.safe_load(RULES.read_text())['groups'][0]['rules'])}" in out.stdout


def test_promtool_unit_tests_pass():
    assert RULE_TESTS
    out = subprocess.run(
        [tool("promtool"), "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        cwd=RULES.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_tested_silent_and_firing():
    silent: set[str] = set()
    firing: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - silent == set(), "alerts never tested below or at their threshold"
    assert names - firing == set(), "alerts never tested firing"


def runbook_base() -> str:
    """The base the rules' runbook URLs start with, as their header states it."""
    (base,) = re.findall(r"^# runbook_base: (\S+)$", RULES.read_text(), re.M)
    return str(base)


def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists():
    sections = anchors(OPERATIONS.read_text())
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["labels"]["resync_alert"], name
        assert alert["annotations"]["summary"], name
        page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert page == f"{runbook_base()}/operations.md", name
        assert anchor in sections, f"{name}: no section #{anchor} in docs/operations.md"


def test_the_runbook_base_is_absolute_and_replaced_as_documented():
    """One documented sed points every runbook URL at an operator's copy of docs/."""
    base = runbook_base()
    assert base.startswith("https://") and not base.endswith("/")
    text = RULES.read_text()
    urls = re.findall(r"runbook_url: (\S+)", text)
    assert urls and all(url.startswith(f"{base}/") for url in urls)
    assert f"sed 's#{base}#" in OPERATIONS.read_text()
    assert f"sed 's#{base}#" in text


def test_the_rules_read_only_exported_metrics():
    used = {n for a in alerts() for n in re.findall(r"\bue_resync_[a-z0-9_]+", a["expr"])}
    assert used
    assert used - exported_names() == set()
