"""Debian's Prometheus and promtool for the tests: found on PATH, or the test skips (fails under
CI, which installs them: tests/tools.py)."""

from __future__ import annotations

import json
import re
import socket
import string
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from support.poll import wait_for
from tests import tools
from ue_resync.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "prometheus" / "ue-resync.rules.yml"
RULE_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*.yml"))
SCRAPE_TEMPLATE = ROOT / "prometheus" / "prometheus-test.yml.tmpl"
DASHBOARD = ROOT / "docs" / "grafana" / "ue-resync-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"


def tool(name: str) -> str:
    """The path of `name` (promtool, prometheus), as tests/tools.py requires it."""
    return tools.require(name, "apt-get install --no-install-recommends prometheus")


def exported_names() -> set[str]:
    """Every metric family and sample name a daemon exports once it has read the database."""
    metrics = Metrics()
    metrics.enqueued.value = 0
    text = generate_latest(metrics.registry).decode()
    families = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    return families | samples


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """A Prometheus of the test's own: loopback, a free port, storage in `root`, scraping
    `target` every second under the job name `ue-resync`, with the project's rules."""

    def __init__(self, root: Path, target: str) -> None:
        self.port = free_port()
        while target.endswith(f":{self.port}"):  # the daemon binds its port later
            self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = root / "prometheus.yml"
        config.write_text(
            string.Template(SCRAPE_TEMPLATE.read_text()).substitute(target=target, rules=RULES)
        )
        self.log = root / "prometheus.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a success, or an AssertionError with the error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        assert body["status"] == "success", f"{path} {params}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of `expr` now (a scalar comes back as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The value of a single-series `expr`, or None when it has no series."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, expected: float, timeout: float = 30, tol: float = 0) -> None:
        """Poll until `expr` is `expected` (within `tol`): the scrapes run every second."""
        wait_for(
            lambda: (v := self.value(expr)) is not None and abs(v - expected) <= tol,
            timeout,
            f"{expr} == {expected} (last {self.value(expr)})",
            interval=0.2,
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
