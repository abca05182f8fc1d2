"""How every path runs uvicorn: `python server.py` with WORKERS=1, each worker process of a
multi-worker server (bot/connection_handoff.py), and the in-process server of the demo, the
tests and the benchmarks (bot/local_server.py). What a slow or hostile client may hold
(request-head deadline, idle limit) is the same on all of them."""

from __future__ import annotations

from typing import Any

from bot.settings import Settings
from bot.uvicorn_compat import ServerConfig

UVICORN_OPTIONS: dict[str, Any] = {"log_level": "warning", "ws_per_message_deflate": False}  # media is PCM


def server_config(app: Any, settings: Settings, **options: Any) -> ServerConfig:
    """uvicorn's configuration for `app`: our protocols and the settings' timeouts."""
    return ServerConfig(
        app,
        header_timeout_secs=settings.http_header_timeout_secs,
        idle_timeout_secs=settings.http_idle_timeout_secs,
        **{**UVICORN_OPTIONS, **options},
    )

