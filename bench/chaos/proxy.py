"""A small TCP proxy on 127.0.0.1 that the chaos run can cut and restore.

Each `Link` listens on a loopback port of its own and forwards every connection to the server
(TCP host:port, or a Unix socket path). `cut()` aborts every connection it carries, on both sides
(the client reads a reset, the server backend an EOF, so its transaction rolls back) and closes
the listening socket, so a reconnect is refused until `restore()` listens again on the same port.
The links run on an event loop of their own, in a thread: the chaos run's main loop stays
synchronous and calls `cut`/`restore` from there."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 65536


class Link:
    """One proxied path: 127.0.0.1:`port` → `target` (("tcp", host, port) or ("unix", path))."""

    def __init__(self, target: tuple[Any, ...], name: str) -> None:
        self.target = target
        self.name = name
        self.port = 0
        self.is_cut = False
        self.connections = 0  # accepted and forwarded, over the link's life
        self.cuts = 0
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.Transport] = set()

    async def listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> int:
        """Abort every connection and stop listening; returns how many were aborted."""
        self.is_cut = True
        self.cuts += 1
        if self._server is not None:
            self._server.close()
            self._server = None
        aborted = len(self._open)
        for transport in list(self._open):
            transport.abort()
        self._open.clear()
        return aborted

    async def restore(self) -> None:
        if not self.is_cut:
            return
        self.is_cut = False
        await self.listen()

    async def close(self) -> None:
        await self.cut()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.is_cut:
            client_w.transport.abort()
            return
        try:
            if self.target[0] == "unix":
                up_r, up_w = await asyncio.open_unix_connection(self.target[1])
            else:
                up_r, up_w = await asyncio.open_connection(self.target[1], self.target[2])
        except OSError:
            client_w.transport.abort()
            return
        if self.is_cut:  # cut while we were connecting upstream
            client_w.transport.abort()
            up_w.transport.abort()
            return
        self.connections += 1
        pair = (client_w.transport, up_w.transport)
        self._open.update(pair)  # type: ignore[arg-type]
        try:
            await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
        finally:
            for transport in pair:
                self._open.discard(transport)  # type: ignore[arg-type]
                transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


class Proxy:
    """The links, by name, and the thread whose event loop runs them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.links: dict[str, Link] = {}
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def add(self, target: tuple[Any, ...], name: str) -> Link:
        link = Link(target, name)
        self._call(link.listen())
        self.links[name] = link
        return link

    def cut(self, link: Link) -> int:
        return self._call(link.cut())

    def restore(self, link: Link) -> None:
        self._call(link.restore())

    def stop(self) -> None:
        for link in self.links.values():
            with contextlib.suppress(Exception):
                self._call(link.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
