"""Talking to systemd, the service manager, with its notification protocol (sd_notify): READY,
WATCHDOG, STATUS, STOPPING datagrams to $NOTIFY_SOCKET. A no-op when the daemon does not run
under systemd. (Not to be confused with PostgreSQL's LISTEN/NOTIFY, which wakes the daemon up.)"""

from __future__ import annotations

import contextlib
import os
import socket


class ServiceManager:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> None:
        if self._sock is None:
            return
        target = self.address
        if target.startswith("@"):  # abstract namespace
            target = "\0" + target[1:]
        # systemd gone away is nothing this daemon can do anything about.
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(fields).encode("utf-8"), target)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds, when the watchdog is armed for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
