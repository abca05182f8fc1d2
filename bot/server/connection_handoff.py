"""Connections handed to the worker process with the fewest live ones.

The supervisor owns the listening socket. It accepts each connection and passes the socket
(SCM_RIGHTS over a Unix socketpair) to the ready worker with the fewest open connections;
the worker serves it with uvicorn's own protocol, as if it had accepted it, and reports
back when it closes. A media socket is a call lasting minutes, so where calls land decides
how loaded a worker is for a long time: SO_REUSEPORT hashes connections at random (runs of
100 calls split 62/38 between two workers, and the busier one's event loop fell behind),
and a shared accept socket goes to whichever process wakes first (54 of 75 to one worker).

Wire format on each socketpair, one byte per message:
  supervisor -> worker: b"c" with one file descriptor attached (a new connection);
  worker -> supervisor: b"r" once it serves (ready), b"x" per connection closed (HTTP or
  WebSocket), b"s" when it stops taking connections (its drain is over, it shuts down).
A draining worker still takes connections: it answers /health with 503 and refuses media
sockets, so a load balancer in front learns it is going.
"""

from __future__ import annotations

import asyncio
import itertools
import selectors
import socket
from dataclasses import dataclass

from loguru import logger

from bot.server.app_server import AppServer
from bot.server.drain import Drain
from bot.server.uvicorn_compat import ServerConfig, protocol_factory

NEW_CONNECTION, READY, CLOSED, STOPPING = b"c", b"r", b"x", b"s"


@dataclass
class WorkerChannel:
    """The supervisor's end of one worker's socketpair, and what it knows of that worker."""

    sock: socket.socket
    ready: bool = False
    stopping: bool = False
    live: int = 0
    handed: int = 0


class ConnectionBalancer:
    """Accepts on `listener` and hands each connection to the least-loaded ready worker."""

    def __init__(self, listener: socket.socket):
        listener.setblocking(False)
        self.listener = listener
        self.channels: dict[int, WorkerChannel] = {}  # by worker index
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._turn = itertools.count()
        self.started: set[int] = set()  # workers (by index) whose current process reported ready

    def attach(self, index: int, sock: socket.socket) -> None:
        """A (re)started worker's channel; any previous one for `index` is dropped."""
        self.detach(index)
        self.started.discard(index)
        sock.setblocking(False)
        self.channels[index] = WorkerChannel(sock)
        self._selector.register(sock, selectors.EVENT_READ, index)

    def detach(self, index: int) -> None:
        old = self.channels.pop(index, None)
        if old is not None:
            self._selector.unregister(old.sock)
            old.sock.close()

    def run_for(self, timeout: float) -> None:
        """Serve whatever is ready within `timeout` seconds (the supervisor's poll)."""
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._accept_all()
            else:
                self._read_worker(key.data)

    def settle(self, index: int) -> None:
        """Read all a (dead) worker sent before its channel closed: did it ever report ready?"""
        for _ in range(1000):
            if index not in self.channels or not self._read_worker(index):
                return

    def close(self) -> None:
        """Stop taking connections (shutdown: the workers finish the live ones)."""
        self._selector.unregister(self.listener)
        self.listener.close()

    def _accept_all(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        ready = [(index, ch) for index, ch in self.channels.items() if ch.ready and not ch.stopping]
        turn = next(self._turn)
        # Fewest live connections; ties taken in turn, so short requests alternate too. A worker
        # whose channel is full (stuck) or gone is passed over for the next.
        ready.sort(key=lambda item: (item[1].live, (item[0] - turn) % len(self.channels)))
        for index, channel in ready:
            try:
                socket.send_fds(channel.sock, [NEW_CONNECTION], [conn.fileno()])
            except OSError as error:
                logger.error(f"could not hand a connection to worker {index}: {error}")
                continue
            channel.live += 1
            channel.handed += 1
            return
        logger.warning("no worker ready: connection refused")

    def _read_worker(self, index: int) -> bool:
        """One read of a worker's messages; False when nothing more is waiting."""
        channel = self.channels[index]
        try:
            data = channel.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:  # the worker is gone; the supervisor restarts it (or gives up on it)
            self.detach(index)
            return False
        if READY in data:
            self.started.add(index)
        channel.ready = channel.ready or READY in data
        channel.stopping = channel.stopping or STOPPING in data
        channel.live = max(0, channel.live - data.count(CLOSED))
        return True


class HandoffServer(AppServer):
    """uvicorn serving the connections its supervisor hands over on `channel` (no listener),
    through its drain (it keeps taking connections while draining) until it shuts down."""

    def __init__(self, config: ServerConfig, channel: socket.socket, drain: Drain | None = None):
        super().__init__(config, drain)
        self.channel = channel
        self._connecting: set[asyncio.Task] = set()
        config.on_connection_closed = self._report_closed  # HTTP and upgraded (WebSocket) alike

    def _supervisor_gone(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop listening to the closed channel (it would wake the loop forever) and drain: the
        live calls finish, then this worker exits instead of lingering orphaned."""
        loop.remove_reader(self.channel.fileno())
        logger.warning("the supervisor is gone: finishing the live calls, then exiting")
        self.should_exit = True

    def _report_closed(self) -> None:
        try:
            self.channel.send(CLOSED)
        except OSError:
            pass  # the supervisor is gone: nothing to balance any more

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        if self.should_exit:
            return
        loop = asyncio.get_running_loop()
        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), self._take_connections, loop)
        self.channel.send(READY)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Tell the supervisor to send nothing more, close what it sent meanwhile, shut down."""
        try:
            self.channel.send(STOPPING)
        except OSError:
            pass
        asyncio.get_running_loop().remove_reader(self.channel.fileno())
        self._refuse_pending()
        await super().shutdown(sockets=sockets)

    def _refuse_pending(self) -> None:
        """Connections handed over before the supervisor read STOPPING: closed unserved (the
        client sees a reset and retries, as with any server going away)."""
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(self.channel, 1024, 64)
            except (BlockingIOError, InterruptedError, OSError):
                return
            if not fds:
                return
            for fd in fds:
                socket.socket(fileno=fd).close()

    def _take_connections(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.channel, 1024, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data and not fds:  # the supervisor is gone (killed): no more connections will come
            self._supervisor_gone(loop)
            return
        for fd in fds:
            conn = socket.socket(fileno=fd)
            conn.setblocking(False)
            task = loop.create_task(loop.connect_accepted_socket(protocol_factory(self, loop), conn))
            self._connecting.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._connecting.discard)
