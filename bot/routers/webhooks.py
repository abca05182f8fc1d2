"""Exotel's status callbacks: idempotent updates of the call record (form or JSON bodies).

Exotel is answered 200 once the update is in the database or, while the database is
unavailable, in the journal (replayed later); 503 only if neither took it, so Exotel retries."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from loguru import logger

from bot.exotel_client import InvalidStatusCallback, parse_status_callback
from bot.signing import verify
from bot.store import StatusUpdate
from bot.store.durable import RecordNotSaved
from bot.store.models import utcnow

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
    try:
        changed = await state.records.apply_status(StatusUpdate(
            call_sid=update.call_sid, status=update.status, recording_url=update.recording_url,
            answered_by=update.answered_by,
            duration_secs=float(update.duration) if update.duration is not None else None,
            at=utcnow(),  # when it happened, also if it is written later from the journal
        ))
    except RecordNotSaved:  # neither the database nor the journal took it: Exotel retries
        raise HTTPException(status_code=503, detail="call records unavailable") from None
    note = {True: "", False: " (no change)", None: " (journalled until the database answers)"}[changed]
    logger.bind(call_sid=update.call_sid).info(f"status callback: {update.status}{note}")
    return {"status": "ok"}
