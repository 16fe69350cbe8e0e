"""Waiting for a condition: probe it until it holds or a deadline passes. The pause between
two probes paces the polling; it never stands in for the condition."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
INTERVAL = 0.02  # seconds between two probes
_never = threading.Event()  # never set: wait() is an interruptible pause


class WaitTimeout(AssertionError):
    """The condition did not hold in time. An AssertionError, so a test reads it as a failure."""


def wait_for(
    probe: Callable[[], T | None], timeout: float = 10.0, what: str = "", interval: float = INTERVAL
) -> T:
    """The first truthy value of `probe()`; WaitTimeout naming `what` after `timeout` seconds.
    Exceptions from `probe` (a process found dead, say) pass through at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or probe}")
        _never.wait(interval)


async def await_for(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float = 10.0,
    what: str = "",
    interval: float = INTERVAL,
) -> T:
    """wait_for for a coroutine probe, on the running event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or probe}")
        await asyncio.sleep(interval)
