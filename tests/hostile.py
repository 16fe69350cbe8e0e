"""What the hostile-input tests share: hypothesis settings for fuzzing against a real server,
and the count of inputs tried, written to the terminal at the end of each module that uses
`report_inputs_tried` (import it: it is autouse there)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

TRIED: Counter[str] = Counter()


FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


@pytest.fixture(scope="module", autouse=True)
def report_inputs_tried(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TRIED:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nhostile inputs tried: {sum(TRIED.values())} ({kinds})")
    TRIED.clear()
