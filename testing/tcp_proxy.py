"""A loopback TCP proxy a test can cut or stall: the database "goes away" (every connection
closed, new ones refused) or hangs (connections accepted, nothing answered), and comes back on
the same port, with no real outage needed."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """127.0.0.1:`port` -> `upstream_host`:`upstream_port`. `stop()` closes every connection and
    the listener (connecting then gets "connection refused"); `start()` listens again.
    `stall()` keeps every connection open but forwards nothing (a hung server) until `flow()`."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.connections = 0  # accepted so far (tests check traffic went through the proxy)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones (as a database going down does)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pumps):
            task.cancel()
        if self._pumps:
            await asyncio.wait(self._pumps, timeout=5)
        if self._server is not None:
            await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            self._server = None

    def stall(self) -> None:
        """Answer nothing (bytes wait in the proxy) until `flow()`."""
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), timeout=5)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pumps = [asyncio.create_task(self._pump(reader, up_writer)), asyncio.create_task(self._pump(up_reader, writer))]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)
            self._pumps.difference_update(pumps)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
