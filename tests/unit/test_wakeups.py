"""The wake-up self-check's state: each change said once, the poll cap until a check hears; its
settings. (The check against real servers and pgbouncer: tests/e2e/test_pgbouncer.py.)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pgqueuer.domain import errors

from ue_resync.settings import SettingsError, load
from ue_resync.wakeups import Wakeups


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(("info", message.format(*args)))

    def warning(self, message: str, *args: Any) -> None:
        self.lines.append(("warning", message.format(*args)))


class Listener:
    """Answers the probe or not, as pgqueuer's listener_healthy does."""

    def __init__(self) -> None:
        self.hears = True

    async def listener_healthy(self, timeout: timedelta = timedelta(seconds=10)) -> None:
        if not self.hears:
            raise errors.FailingListenerError


async def test_each_change_is_said_once_and_deaf_means_the_bounded_poll():
    log, listener = Lines(), Listener()
    w = Wakeups(sleep=3, sleep_without=0.5, log=log)
    assert w.poll_interval() == timedelta(seconds=0.5)  # not heard yet
    listener.hears = False
    for _ in range(3):
        assert not await w.check(listener, timeout=0.01)
    assert w.poll_interval() == timedelta(seconds=0.5)
    [(level, line)] = log.lines
    assert level == "warning" and "UE_RESYNC_LISTEN_URL" in line and "every 0.5 s" in line
    listener.hears = True
    assert await w.check(listener)
    assert await w.check(listener)
    assert w.poll_interval() is None
    assert log.lines[1:] == [("info", "wake-ups arrive again; polling every 3 s")]


def test_the_bounded_poll_is_never_longer_than_sleep():
    assert Wakeups(sleep=0.2, sleep_without=0.5, log=Lines()).sleep_without == 0.2


def test_the_listen_url_defaults_to_the_database_url(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("UE_RESYNC_LISTEN_URL", "UE_RESYNC_SLEEP_WITHOUT_WAKEUPS", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UE_RESYNC_DATABASE_URL", "postgresql://d@pgbouncer:6432/app")
    assert load().listen_dsn() == "postgresql://d@pgbouncer:6432/app"
    monkeypatch.setenv("UE_RESYNC_LISTEN_URL", " ")
    assert load().listen_dsn() == "postgresql://d@pgbouncer:6432/app"
    monkeypatch.setenv("UE_RESYNC_LISTEN_URL", "postgresql://d@db:5432/app")
    assert load().listen_dsn() == "postgresql://d@db:5432/app"
    assert load().sleep_without_wakeups == 0.5
    monkeypatch.setenv("UE_RESYNC_SLEEP_WITHOUT_WAKEUPS", "0.01")
    with pytest.raises(SettingsError, match="sleep_without_wakeups"):
        load()


async def test_a_queue_trigger_that_notifies_elsewhere_is_named():
    log, listener = Lines(), Listener()
    w = Wakeups(sleep=3, sleep_without=0.5, log=log)
    heard = False

    async def table(timeout: float) -> bool:
        return heard

    assert not await w.check(listener, table, timeout=0.01)
    [(level, line)] = log.lines
    assert level == "warning" and "fn_pgqueuer_changed" in line and "migrate --verify" in line
    assert w.poll_interval() == timedelta(seconds=0.5)
    heard = True
    assert await w.check(listener, table)
    assert w.poll_interval() is None
