"""Whether the daemon's wake-ups work: a change of the queue table must reach its LISTEN.

Two probes, both on the query connection. pgqueuer's own NOTIFY to itself must come back on the
LISTEN connection: through a transaction pooler (pgbouncer's pool_mode = transaction) it never
does, the LISTEN having run on whichever server connection served that one statement. Then the
path a real job's wake-up takes: a change of the queue table fires its trigger
(resync.fn_pgqueuer_changed), whose NOTIFY must arrive too: it does not when another tool
rewrote the trigger to notify another channel (`pgq upgrade` without PGQUEUER_CHANNEL). The
check runs when a connected life starts (start, each reconnect) and every CHECK_EVERY seconds; a
change is logged once, in one line, and while wake-ups fail the dequeue loop polls every
`sleep_without_wakeups` seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

from pgqueuer.domain import errors

CHECK_EVERY = 60.0
ARRIVAL_TIMEOUT = 5.0  # a NOTIFY on a healthy connection arrives in milliseconds
LIKELY_CAUSE = (
    "the LISTEN connection is likely behind a transaction pooler (pgbouncer pool_mode = "
    "transaction); set UE_RESYNC_LISTEN_URL to a direct connection for LISTEN alone"
)
TRIGGER_CAUSE = (
    "the queue table's trigger notifies another channel than ue_resync (pgq upgrade rewrites "
    "resync.fn_pgqueuer_changed unless PGQUEUER_CHANNEL=ue_resync): `ue-resync migrate "
    "--verify` says, `ue-resync migrate` repairs it"
)

# Fires a change of the queue table and says whether its NOTIFY arrived within the timeout.
TableProbe = Callable[[float], Awaitable[bool]]


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

    async def check(
        self,
        prober: Prober,
        table: TableProbe | None = None,
        timeout: float = ARRIVAL_TIMEOUT,
    ) -> bool:
        started = time.monotonic()
        try:
            await prober.listener_healthy(timeout=timedelta(seconds=timeout))
            cause = None
        except errors.FailingListenerError:
            cause = LIKELY_CAUSE
        if cause is None and table is not None and not await table(timeout):
            cause = TRIGGER_CAUSE
        self.checks += 1
        self._record(cause, time.monotonic() - started, timeout)
        return cause is None

    async def watch(
        self, prober: Prober, listening: asyncio.Event, table: TableProbe | None = None
    ) -> None:
        """Check once the LISTEN is in place, then every CHECK_EVERY seconds, until cancelled
        (at the end of a connected life: a reconnect starts a new watch)."""
        self.heard = False
        await listening.wait()
        while True:
            await self.check(prober, table)
            await asyncio.sleep(CHECK_EVERY)

    def _record(self, cause: str | None, seconds: float, timeout: float) -> None:
        ok = cause is None
        before, self.working, self.heard = self.working, ok, ok
        if ok and before is None:
            self.log.info(
                "wake-ups checked: a change of the queue table reached the LISTEN in {:.0f} ms",
                seconds * 1e3,
            )
        elif ok and before is False:
            self.log.info("wake-ups arrive again; polling every {:g} s", self.sleep)
        elif not ok and before is not False:
            self.log.warning(
                "wake-ups do not arrive: a NOTIFY did not reach the LISTEN within {:g} s ({}); "
                "polling every {:g} s",
                timeout,
                cause,
                self.sleep_without,
            )
