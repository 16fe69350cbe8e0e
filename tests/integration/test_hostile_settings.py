"""Hostile and broken input, settings: malformed UE_RESYNC_* values through settings.load(),
fuzzed: accepted as a value the daemon can use, or refused in one line. (Through the CLI:
tests/e2e/test_hostile_cli.py.)

How many inputs of each kind were tried is written to the terminal at the end of the module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.env import SCRUBBED_PREFIXES
from tests.hostile import TRIED, fuzz
from tests.hostile import report_inputs_tried as report_inputs_tried  # autouse
from ue_resync.settings import SettingsError, load

NUMERIC = (
    "SLEEP",
    "TRIES",
    "MAX_TIME",
    "TIMEOUT",
    "CONCURRENCY",
    "BATCH_SIZE",
    "HEARTBEAT_TIMEOUT",
    "TIME_SCALE",
    "METRICS_PORT",
    "DB_PORT",
)


OTHER = ("BACKOFF", "LOG_FORMAT", "LOG_LEVEL", "STOP_WHEN_EMPTY")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(SCRUBBED_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


@fuzz(300)
@given(
    st.sampled_from(NUMERIC + OTHER),
    st.one_of(
        st.text(max_size=30).filter(lambda s: "\x00" not in s),
        st.sampled_from(
            [
                "-1",
                "0",
                "abc",
                "",
                " ",
                "1e400",
                "nan",
                "inf",
                "-inf",
                "x,y",
                ",",
                "1,,2",
                "0x10",
                "1_000",
                "99999999999999999999",
                "xml",
                "TRUE",
                "maybe",
            ]
        ),
        st.integers(-(10**6), 10**6).map(str),
        st.floats().map(str),
    ),
)
def test_fuzzed_settings_load_or_fail_in_one_line(clean_env: None, name: str, value: str) -> None:
    key = name if name.startswith("DB_") else f"UE_RESYNC_{name}"
    TRIED[f"settings.load.{name}"] += 1
    os.environ[key] = value
    try:
        loaded = load()
    except SettingsError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("invalid setting"), str(exc)
        return
    finally:
        del os.environ[key]
    # Accepted: the value is one the daemon can use.
    assert 0 < loaded.sleep <= 3600 and 1 <= loaded.tries <= 100
    assert loaded.timeout > 0 and 1 <= loaded.concurrency <= 64 and 0 < loaded.time_scale <= 1
    assert all(b >= 0 for b in loaded.backoff) and loaded.backoff
