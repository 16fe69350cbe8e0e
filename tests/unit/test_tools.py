"""tests/tools.py: a missing tool skips a test outside CI and fails it under CI."""

from __future__ import annotations

import pytest

from tests import tools

ABSENT = "ue-resync-no-such-tool"


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_under_ci_a_missing_tool_fails_the_test(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=f"{ABSENT} is not installed \\(apt-get x\\)"):
        tools.require(ABSENT, "apt-get x")


@pytest.mark.parametrize("value", [None, "", "0", "false"])
def test_outside_ci_a_missing_tool_skips_the_test_and_says_why(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match=f"{ABSENT} is not installed \\(apt-get x\\)"):
        tools.require(ABSENT, "apt-get x")


def test_a_tool_is_found_on_the_path_or_where_it_is_said_to_be(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "1")
    exe = tmp_path / "tool"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert tools.require(ABSENT, "-", also=["/nonexistent/tool", str(exe)]) == str(exe)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert tools.require("tool", "-") == str(exe)
