"""The media socket Exotel's Voicebot applet opens: `/media` (and the seed's `/voicebot/ws`)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, WebSocket
from loguru import logger

from bot.call_runner import run_call
from bot.call_session import CallSession
from bot.campaigns import CampaignError
from bot.media_auth import media_request_authorized
from bot.media_handshake import HandshakeError, read_handshake
from bot.settings import Settings

router = APIRouter(tags=["media"])
POLICY_VIOLATION = 1008


@router.websocket("/media")
@router.websocket("/voicebot/ws")
async def media_stream(websocket: WebSocket) -> None:
    """One Exotel call: authenticate, read `start`, run the call's pipeline until hang-up."""
    settings: Settings = websocket.app.state.settings
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
    session = CallSession.from_handshake(
        handshake.start, dict(websocket.query_params), default_rate=settings.exotel_sample_rate or 8000
    )
    session.socket_opened_monotonic = opened
    session.start_received_monotonic = time.monotonic()
    log = logger.bind(call_sid=session.call_sid)
    store = websocket.app.state.store
    if store is not None:  # a dialled call: its campaign and lead were stored against the Sid
        found = await store.lead_for_call(session.call_sid)
        if found:
            session.campaign = found[0] or session.campaign
            session.lead = {**session.lead, **(found[1] or {})}
    try:
        campaign = websocket.app.state.campaigns.get(session.campaign, settings.default_campaign)
    except CampaignError as error:
        log.error(f"call refused: {error}")
        await _close_quietly(websocket, POLICY_VIOLATION)
        return
    session.campaign = campaign.name
    log.info(
        f"call started: campaign={campaign.name} rate={session.sample_rate} "
        f"start={'yes' if handshake.had_start else 'no (media first)'}"
    )
    if store is not None:
        session.on_update = _progress_saver(store, session)
    live_calls: dict = websocket.app.state.live_calls
    live_calls[session.call_sid] = session
    try:
        # Every log line of this call (ours and Pipecat's, in every task it starts) carries the sid.
        with logger.contextualize(call_sid=session.call_sid):
            await run_call(
                websocket, session, campaign, settings, handshake.messages,
                websocket.app.state.speech_cache,
            )
    except Exception:
        log.exception("call failed")
        session.finish("error")
        await _close_quietly(websocket, 1011)
    finally:
        live_calls.pop(session.call_sid, None)
        await websocket.app.state.call_sink.call_finished(session)


def _progress_saver(store, session: CallSession):
    """Save the transcript as it grows, off the audio path (one write in flight at a time)."""
    pending: dict[str, asyncio.Task | None] = {"task": None}

    async def save() -> None:
        try:
            await store.save_progress(session.call_sid, session.transcript, session.collected)
        except Exception as error:
            logger.bind(call_sid=session.call_sid).warning(f"could not save call progress: {error}")

    def schedule() -> None:
        task = pending["task"]
        if task is None or task.done():
            pending["task"] = asyncio.create_task(save())

    return schedule


async def _close_quietly(websocket: WebSocket, code: int) -> None:
    try:
        await websocket.close(code=code)
    except Exception:
        pass
