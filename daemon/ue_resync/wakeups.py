"""Whether the daemon's wake-ups work: a NOTIFY it sends itself must reach its LISTEN.

The NOTIFY goes out on the query connection (as a writer's trigger would send it) and must come
back on the LISTEN connection. Through a transaction pooler (pgbouncer's pool_mode = transaction)
it never does: the LISTEN ran on whichever server connection served that one statement, and the
pooler forwards nothing to a client outside a transaction. The check runs when a connected life
starts (start, each reconnect) and every CHECK_EVERY seconds; a change is logged once, in one
line, and while wake-ups fail the dequeue loop polls every `sleep_without_wakeups` seconds."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any, Protocol

from pgqueuer.domain import errors

CHECK_EVERY = 60.0
ARRIVAL_TIMEOUT = 5.0  # a NOTIFY on a healthy connection arrives in milliseconds
LIKELY_CAUSE = (
    "the LISTEN connection is likely behind a transaction pooler (pgbouncer pool_mode = "
    "transaction); set UE_RESYNC_LISTEN_URL to a direct connection for LISTEN alone"
)


class Prober(Protocol):
    """pgqueuer's QueueManager: `listener_healthy` sends a NOTIFY tagged with a fresh id on the
    query connection and waits for it on the LISTEN connection."""

    async def listener_healthy(self, timeout: timedelta = ...) -> Any: ...


class Wakeups:
    """The state of the self-check across reconnects, so each change is said once."""

    def __init__(self, sleep: float, sleep_without: float, log: Any) -> None:
        self.sleep = sleep
        self.sleep_without = min(sleep, sleep_without)
        self.working: bool | None = None  # None until the first check has answered
        self.heard = False  # whether a check of this connected life has answered yes
        self.checks = 0
        self.log = log

    def poll_interval(self) -> timedelta | None:
        """The cap on the dequeue loop's wait: None once this connected life's check has heard
        its NOTIFY. Until then the loop polls as if deaf, so a wait begun before the answer is
        never a full --sleep."""
        return None if self.heard else timedelta(seconds=self.sleep_without)

    async def check(self, prober: Prober, timeout: float = ARRIVAL_TIMEOUT) -> bool:
        started = time.monotonic()
        try:
            await prober.listener_healthy(timeout=timedelta(seconds=timeout))
            ok = True
        except errors.FailingListenerError:
            ok = False
        self.checks += 1
        self._record(ok, time.monotonic() - started, timeout)
        return ok

    async def watch(self, prober: Prober, listening: asyncio.Event) -> None:
        """Check once the LISTEN is in place, then every CHECK_EVERY seconds, until cancelled
        (at the end of a connected life: a reconnect starts a new watch)."""
        self.heard = False
        await listening.wait()
        while True:
            await self.check(prober)
            await asyncio.sleep(CHECK_EVERY)

    def _record(self, ok: bool, seconds: float, timeout: float) -> None:
        before, self.working, self.heard = self.working, ok, ok
        if ok and before is None:
            self.log.info(
                "wake-ups checked: a NOTIFY reached the LISTEN in {:.0f} ms", seconds * 1e3
            )
        elif ok and before is False:
            self.log.info("wake-ups arrive again; polling every {:g} s", self.sleep)
        elif not ok and before is not False:
            self.log.warning(
                "wake-ups do not arrive: a NOTIFY sent to itself did not reach the LISTEN within "
                "{:g} s ({}); polling every {:g} s",
                timeout,
                LIKELY_CAUSE,
                self.sleep_without,
            )
