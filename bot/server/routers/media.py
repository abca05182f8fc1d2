"""The media socket Exotel's Voicebot applet opens: `/media` (and the seed's `/voicebot/ws`)."""

from __future__ import annotations

import time

from fastapi import APIRouter, WebSocket
from loguru import logger

from bot.server.call_admission import admit_call
from bot.server.call_runner import run_call
from bot.server.media_auth import media_request_authorized
from bot.server.media_handshake import HandshakeError, read_handshake
from bot.server.services import services
from bot.store.progress import ProgressSaver
from pipelines.call_session import CallSession, InvalidStream

router = APIRouter(tags=["media"])
POLICY_VIOLATION = 1008


@router.websocket("/media")
@router.websocket("/voicebot/ws")
async def media_stream(websocket: WebSocket) -> None:
    """One Exotel call: authenticate, read `start`, run the call's pipeline until hang-up."""
    state = services(websocket)
    settings = state.settings
    if not media_request_authorized(websocket.headers.get("authorization"), settings):
        logger.warning(f"media socket refused: bad or missing Basic auth from {websocket.client}")
        await websocket.close(code=POLICY_VIOLATION)  # before accept: an HTTP 403
        return
    opened = time.monotonic()
    await websocket.accept()
    try:
        handshake = await read_handshake(websocket, settings.handshake_timeout_secs)
    except HandshakeError as error:
        logger.warning(f"media socket dropped: {error}")
        await _close_quietly(websocket, POLICY_VIOLATION)
        return
    try:
        session = CallSession.from_handshake(
            handshake.start, dict(websocket.query_params), default_rate=settings.exotel_sample_rate or 8000
        )
    except InvalidStream as error:
        logger.warning(f"media socket refused: {error}")
        await _close_quietly(websocket, POLICY_VIOLATION)
        return
    session.socket_opened_monotonic = opened
    session.start_received_monotonic = time.monotonic()
    log = logger.bind(call_sid=session.call_sid)
    live_calls = state.live_calls
    if session.call_sid in live_calls:
        log.warning("media socket refused: this call already has a live media session")
        await _close_quietly(websocket, POLICY_VIOLATION)
        return
    live_calls[session.call_sid] = session  # held from here: a second socket for this call is refused
    admitted = False
    try:
        campaign = await admit_call(state, session, handshake.had_start)
        if campaign is None:
            await _close_quietly(websocket, POLICY_VIOLATION)
            return
        admitted = True
        if state.records is not None:
            session.on_update = ProgressSaver(state.records, session)
        if state.ownership is not None:  # the record names this process while the call runs
            state.ownership.claim_soon(session.call_sid)
        # Every log line of this call (ours and Pipecat's, in every task it starts) carries the sid.
        with logger.contextualize(call_sid=session.call_sid):
            await run_call(
                websocket, session, campaign, settings, handshake.messages,
                state.speech_cache,
            )
    except Exception:
        log.exception("call failed")
        session.finish("error")
        await _close_quietly(websocket, 1011)
    finally:
        live_calls.pop(session.call_sid, None)
        if isinstance(session.on_update, ProgressSaver):
            session.on_update.cancel()
        if admitted:
            await state.call_sink.call_finished(session)


async def _close_quietly(websocket: WebSocket, code: int) -> None:
    try:
        await websocket.close(code=code)
    except Exception:
        pass
