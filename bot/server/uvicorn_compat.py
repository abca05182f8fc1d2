"""The one place that reaches into uvicorn's protocol classes and server internals; NEEDS lists
the names relied on, checked at start-up (pipelines/compat: the server refuses to start
without them) and by tests/test_uvicorn_compat.py.

uvicorn's own timeouts start only once a response has gone out (`timeout_keep_alive`): a
client that opens a connection and never finishes its request's headers, or sends them one
byte at a time, holds a socket and a protocol object for ever. `TimedHttpProtocol` gives each
request head a deadline and a request body an idle limit.

uvicorn swaps the connection's protocol on a WebSocket upgrade (`transport.set_protocol`), so
from then on only the WebSocket protocol hears that the connection closed. Both protocols
here call `config.on_connection_closed` exactly once per connection: the HTTP one unless it
upgraded, the WebSocket one always. The multi-worker balancer counts live connections by it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from pipelines.compat import Missing, Need
from pipelines.compat import check as check_needs

DISTRIBUTION = "uvicorn"

_HTTP = "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"
_WS = "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol"
_SERVER = "uvicorn.server:Server"

NEEDS: tuple[Need, ...] = (
    # TimedHttpProtocol: request-head deadline, body idle limit, closes reported once.
    Need(_HTTP, "__init__", params=("self", "config", "server_state", "app_state", "_loop")),
    Need(_HTTP, "connection_made", params=("self", "transport")),
    Need(_HTTP, "connection_lost", params=("self", "exc")),
    Need(_HTTP, "handle_websocket_upgrade", params=("self",), used_by="data_received"),
    *(Need(_HTTP, name, params=("self",)) for name in ("on_message_begin", "on_headers_complete",
                                                       "on_message_complete")),
    Need(_HTTP, "on_body", params=("self", "body")),
    *(Need(_HTTP, name, assigned=True) for name in ("cycle", "flow", "loop", "transport", "config")),
    Need("uvicorn.protocols.http.flow_control:FlowControl", "read_paused", assigned=True),
    Need(_WS, "connection_lost", params=("self", "exc")),
    Need("uvicorn.config:Config", "http_protocol_class", assigned=True),
    Need("uvicorn.config:Config", "ws_protocol_class", assigned=True),
    # protocol_factory: protocols for handed-over connections, as Server.startup makes them.
    Need(_SERVER, "server_state", assigned=True, used_by="startup"),
    Need(_SERVER, "lifespan", assigned=True, used_by="startup"),
    Need("uvicorn.lifespan.on:LifespanOn", "state", assigned=True),
    Need(_SERVER, "startup", params=("self", "sockets")),
    # AppServer: the drain runs in on_tick before uvicorn closes connections.
    Need(_SERVER, "on_tick", params=("self", "counter"), used_by="main_loop"),
    Need(_SERVER, "should_exit", assigned=True),
    Need(_SERVER, "force_exit", assigned=True),
)


def check(needs: tuple[Need, ...] = NEEDS) -> list[Missing]:
    """What the installed uvicorn no longer has of `needs`."""
    return check_needs(needs)


class ServerConfig(uvicorn.Config):
    """uvicorn's Config with our protocols, the request timeouts and a close hook.

    `header_timeout_secs`: a request's line and headers must have arrived this long after the
    connection opened (or after the request's first byte, on a kept-alive connection).
    `idle_timeout_secs`: a kept-alive connection with no request, or a request body with no
    bytes arriving, is closed after this long (uvicorn's keep-alive timeout).
    `on_connection_closed`: called once per closed connection, upgraded or not."""

    def __init__(
        self,
        app: Any,
        *,
        header_timeout_secs: float,
        idle_timeout_secs: float,
        on_connection_closed: Callable[[], None] | None = None,
        **options: Any,
    ):
        super().__init__(app, http=TimedHttpProtocol, ws=ClosingWebSocketProtocol,
                         timeout_keep_alive=idle_timeout_secs, **options)  # type: ignore[arg-type]  # uvicorn takes a float
        self.header_timeout_secs = header_timeout_secs
        self.idle_timeout_secs = idle_timeout_secs
        self.on_connection_closed = on_connection_closed


def _report_closed(config: Any) -> None:
    hook = getattr(config, "on_connection_closed", None)
    if hook is not None:
        hook()


class TimedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline per request head and an idle limit per body."""

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timeout = float(getattr(config, "header_timeout_secs", 10.0))
        self._idle_timeout = float(getattr(config, "idle_timeout_secs", config.timeout_keep_alive))
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._upgraded = False

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self._header_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        try:
            super().connection_lost(exc)
        finally:
            if not self._upgraded:
                _report_closed(self.config)

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timers()
        self._upgraded = True  # from here the WebSocket protocol reports this connection's close
        super().handle_websocket_upgrade()

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a further request on a kept-alive connection
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_too_slow)

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a request (not an upgrade): its body may follow
            self._watch_body()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._watch_body()

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # -- timers ----------------------------------------------------------------------------

    def _watch_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(self._idle_timeout, self._body_idle)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_idle(self) -> None:
        self._body_timer = None
        if self.flow is not None and self.flow.read_paused:  # we stopped reading, not the client
            self._watch_body()
        elif not self.transport.is_closing():
            self.transport.close()


class ClosingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, reporting its connection's close."""

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            _report_closed(self.config)


def protocol_factory(server: uvicorn.Server, loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Protocol]:
    """Protocols for connections accepted elsewhere and handed to `server` (as uvicorn's
    Server.startup makes them for its own listeners)."""
    config = server.config

    def create_protocol() -> asyncio.Protocol:
        return config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=server.server_state, app_state=server.lifespan.state, _loop=loop
        )

    return create_protocol
