"""Read Exotel's opening messages until the stream identifies itself.

Exotel sends `connected` then `start`; some streams skip `start` and the first `media`
carries the stream_sid. Everything read here is handed to the transport to replay, so not
one audio chunk is lost.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from serializers.exotel_events import StreamStart, stream_sid_of

MAX_OPENING_MESSAGES = 50
# Exotel's opening messages are `connected` and `start` (well under 2 KB) and perhaps a few
# 100 ms audio chunks; a socket that sends more than this before saying who it is, is dropped.
MAX_OPENING_BYTES = 256 * 1024


@dataclass
class Handshake:
    """The stream's identity and the raw messages read to learn it."""

    start: StreamStart
    messages: list[str | bytes] = field(default_factory=list)
    had_start: bool = True


class HandshakeError(Exception):
    """The socket closed, timed out or never said who it is."""


async def read_handshake(websocket: WebSocket, timeout: float) -> Handshake:
    """Receive until `start` or the first `media`; HandshakeError otherwise (also when the
    messages before it add up to more than MAX_OPENING_BYTES)."""
    messages: list[str | bytes] = []
    held = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(messages) < MAX_OPENING_MESSAGES:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise HandshakeError(f"no start within {timeout:g}s")
        try:
            raw = await asyncio.wait_for(websocket.receive(), timeout=remaining)
        except TimeoutError:
            raise HandshakeError(f"no start within {timeout:g}s") from None
        except (WebSocketDisconnect, RuntimeError):
            raise HandshakeError("socket closed before start") from None
        if raw.get("type") == "websocket.disconnect":
            raise HandshakeError("socket closed before start")
        data = raw.get("text") if raw.get("text") is not None else raw.get("bytes")
        if data is None:
            continue
        held += len(data)
        if held > MAX_OPENING_BYTES:
            raise HandshakeError(f"more than {MAX_OPENING_BYTES // 1024} KB before start")
        messages.append(data)
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            continue
        if not isinstance(message, dict):
            continue
        if message.get("event") == "start":
            return Handshake(StreamStart.from_message(message), messages)
        if message.get("event") == "media":
            return Handshake(StreamStart(stream_sid=stream_sid_of(message)), messages, had_start=False)
    raise HandshakeError(f"no start in the first {MAX_OPENING_MESSAGES} messages")
