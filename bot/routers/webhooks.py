"""Exotel's status callbacks: idempotent updates of the call record (form or JSON bodies)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from loguru import logger

from bot.exotel_client import InvalidStatusCallback, parse_status_callback
from bot.signing import verify
from bot.store import StatusUpdate

router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/exotel/call-status")
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
    changed = await state.store.apply_status(StatusUpdate(
        call_sid=update.call_sid, status=update.status, recording_url=update.recording_url,
        answered_by=update.answered_by,
        duration_secs=float(update.duration) if update.duration is not None else None,
    ))
    logger.bind(call_sid=update.call_sid).info(
        f"status callback: {update.status}{'' if changed else ' (no change)'}"
    )
    return {"status": "ok"}
