"""Exotel's status callbacks: idempotent updates of the call record (form or JSON bodies).

Exotel does not sign its callbacks, so the address we hand it for each dial carries that
dial's ref and an HMAC of it. A callback is taken only for the call that ref was issued
for: the record of its CallSid must exist (we placed the call) and carry the same ref, so a
leaked callback address cannot touch any other call, nor create records.
"""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, HTTPException, Request
from loguru import logger

from bot.dialer import dial_ref
from bot.exotel_client import InvalidStatusCallback, parse_status_callback
from bot.signing import verify
from bot.store import StatusUpdate

router = APIRouter(tags=["webhooks"])
MAX_CALLBACK_BYTES = 64 * 1024  # Exotel's callbacks are a few hundred bytes
# The dialler stores a call right after Exotel's REST answer gives it the Sid; a call that fails
# at once can have its callback here first. It is held this long for the record to land.
RECORD_WAIT_SECS = 5.0


@router.post("/webhooks/exotel/call-status", max_body_size=MAX_CALLBACK_BYTES)
async def call_status(request: Request, ref: str = "", sig: str = "") -> dict[str, str]:
    """Exotel POSTs here (it retries up to twice, so repeats must change nothing)."""
    state = request.app.state
    if not verify(state.signing_key, "status", ref, sig):
        logger.warning("status callback refused: missing or wrong signature")
        raise HTTPException(status_code=403, detail="bad signature")
    body = await request.body()
    try:
        update = parse_status_callback(request.headers.get("content-type"), body)
    except InvalidStatusCallback as error:
        raise HTTPException(status_code=400, detail=str(error)) from None
    record = await _placed_call(state.store, update.call_sid)
    issued = dial_ref(record.custom_field) if record is not None else None
    if issued is None or not hmac.compare_digest(issued.encode(), ref.encode()):
        logger.warning("status callback refused: its address was not issued for this call")
        raise HTTPException(status_code=403, detail="this callback address is not for this call")
    changed = await state.store.apply_status(StatusUpdate(
        call_sid=update.call_sid, status=update.status, recording_url=update.recording_url,
        answered_by=update.answered_by,
        duration_secs=float(update.duration) if update.duration is not None else None,
    ))
    logger.bind(call_sid=update.call_sid).info(
        f"status callback: {update.status}{'' if changed else ' (no change)'}"
    )
    return {"status": "ok"}


async def _placed_call(store, call_sid: str):
    """The record of a call we placed, waiting up to RECORD_WAIT_SECS for one being stored."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_WAIT_SECS
    while True:
        record = await store.find_call(call_sid)
        if record is not None or loop.time() >= deadline:
            return record
        await asyncio.sleep(0.25)
