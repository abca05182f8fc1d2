"""bot/server/uvicorn_compat.py subclasses uvicorn's protocol classes and calls some of their
internals: this fails when a name or signature it relies on changes in uvicorn."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bot.server.uvicorn_compat import ServerConfig, TimedHttpProtocol


def _params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_http_protocol_internals_we_override_are_there():
    for name in ("connection_made", "connection_lost", "handle_websocket_upgrade", "on_message_begin",
                 "on_headers_complete", "on_body", "on_message_complete"):
        assert callable(getattr(HttpToolsProtocol, name, None)), f"HttpToolsProtocol.{name} is gone"
    assert _params(HttpToolsProtocol.__init__) == ["self", "config", "server_state", "app_state", "_loop"]
    assert "read_paused" in vars(FlowControl(_FakeTransport()))
    source = inspect.getsource(HttpToolsProtocol)
    for attribute in ("self.cycle", "self.flow", "self.loop", "self.transport"):
        assert attribute in source, f"HttpToolsProtocol no longer has {attribute}"
    assert "self.cycle = RequestResponseCycle(" in inspect.getsource(HttpToolsProtocol.on_headers_complete), \
        "a new request no longer makes a new cycle in on_headers_complete"


def test_config_takes_our_protocol_and_keep_alive_timeout():
    config = ServerConfig(lambda *a: None, header_timeout_secs=2.0, idle_timeout_secs=3.0)
    config.load()
    assert config.http_protocol_class is TimedHttpProtocol
    assert config.timeout_keep_alive == 3.0
    assert {"http", "ws", "timeout_keep_alive"} <= set(_params(uvicorn.Config.__init__))


def test_server_internals_protocol_factory_uses_are_there():
    """protocol_factory builds protocols as Server.startup does, from the server's state."""
    startup = inspect.getsource(uvicorn.Server.startup)
    assert "server_state=self.server_state" in startup and "app_state=self.lifespan.state" in startup
    assert "_loop=_loop" in startup


class _FakeTransport:
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def test_upgrade_still_swaps_the_protocol_to_the_configured_websocket_class():
    """Closes are reported by the WebSocket protocol after an upgrade because uvicorn hands the
    transport to `config.ws_protocol_class`; if that changes, closes would go uncounted."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    from bot.server.uvicorn_compat import ClosingWebSocketProtocol

    upgrade = inspect.getsource(HttpToolsProtocol.handle_websocket_upgrade)
    assert "self.ws_protocol_class(" in upgrade and "self.transport.set_protocol(protocol)" in upgrade
    assert callable(WebSocketsSansIOProtocol.connection_lost)
    config = ServerConfig(lambda *a: None, header_timeout_secs=2.0, idle_timeout_secs=3.0)
    config.load()
    assert config.ws_protocol_class is ClosingWebSocketProtocol


def test_the_drain_hook_runs_before_uvicorn_closes_connections():
    """AppServer drains inside Server.on_tick: uvicorn must keep calling it from main_loop until
    it says exit, and only then run shutdown (where WebSockets get close 1012)."""
    assert _params(uvicorn.Server.on_tick) == ["self", "counter"]
    assert "await self.on_tick(counter)" in inspect.getsource(uvicorn.Server.main_loop)
    serve = inspect.getsource(uvicorn.Server._serve)
    assert serve.index("await self.main_loop()") < serve.index("await self.shutdown(")
    assert "force_exit" in inspect.getsource(uvicorn.Server.handle_exit)


def test_the_uvicorn_names_the_server_relies_on_are_there():
    """uvicorn_compat.NEEDS (checked at start-up: the server refuses to start without them)."""
    from bot.server import uvicorn_compat

    assert uvicorn_compat.check() == []


class _Empty:
    """A stand-in for a uvicorn class that has none of the names."""


def _needs():
    from bot.server import uvicorn_compat

    return uvicorn_compat.NEEDS


@pytest.mark.parametrize("need", _needs(), ids=lambda need: need.label)
def test_every_uvicorn_need_is_reported_on_a_stand_in_without_it(need):
    from pipelines.compat import check

    missing = check((dataclasses.replace(need, owner=_Empty),))
    assert len(missing) == 1 and need.name in str(missing[0])


class _ProtocolOfAnotherRelease:
    """HttpToolsProtocol as a release that no longer takes the loop would be."""

    def __init__(self, config, server_state, app_state) -> None:
        self.config = config


def test_a_protocol_that_no_longer_takes_the_loop_is_reported():
    from pipelines.compat import check

    need = next(n for n in _needs() if n.name == "__init__")
    [missing] = check((dataclasses.replace(need, owner=_ProtocolOfAnotherRelease),))
    assert str(missing) == ("_ProtocolOfAnotherRelease.__init__ (takes (self, config, server_state, app_state), "
                            "not (self, config, server_state, app_state, _loop))")
