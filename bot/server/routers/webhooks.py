"""Exotel's status callbacks: idempotent updates of the call record (form or JSON bodies).

Exotel does not sign its callbacks, so the address we hand it for each dial carries that
dial's ref and an HMAC of it. A callback is taken only for the call that ref was issued
for: the record of its CallSid must exist (we placed the call) and carry the same ref, so a
leaked callback address cannot touch any other call, nor create records
(`DurableRecords.apply_callback`).

Exotel is answered 200 once the update is in the database or, while the database is
unavailable, in the journal (replayed later; the store checks the ref when it writes it); 503
when neither took it, so Exotel retries.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from loguru import logger

from bot.exotel.callbacks import InvalidStatusCallback, is_form, parse_status_callback, status_update
from bot.exotel.signing import verify
from bot.server.services import Services, services
from bot.store.calls import CallbackNotForThisCall
from bot.store.durable import RecordNotSaved
from bot.store.models import utcnow

router = APIRouter(tags=["webhooks"])
MAX_CALLBACK_BYTES = 64 * 1024  # Exotel's callbacks are a few hundred bytes: larger is 413


@router.post("/webhooks/exotel/call-status", max_body_size=MAX_CALLBACK_BYTES)
async def call_status(request: Request, ref: str = "", sig: str = "",
                      state: Services = Depends(services)) -> dict[str, str]:
    """Exotel POSTs here (it retries up to twice, so repeats must change nothing)."""
    if not verify(state.signing_key, "status", ref, sig):
        logger.warning("status callback refused: missing or wrong signature")
        raise HTTPException(status_code=403, detail="bad signature")
    if state.records is None:  # only before start-up has opened the store
        raise HTTPException(status_code=503, detail="call records unavailable")
    content_type = request.headers.get("content-type")
    at = utcnow()  # when it happened, also if it is written later from the journal
    try:
        if is_form(content_type):  # url-encoded or multipart: Starlette parses it
            update = status_update((await request.form()).multi_items(), at=at)
        else:  # JSON, or a body whose content type says neither
            update = parse_status_callback(content_type, await request.body(), at=at)
    except InvalidStatusCallback as error:
        raise HTTPException(status_code=400, detail=str(error)) from None
    try:
        changed = await state.records.apply_callback(update, ref)
    except CallbackNotForThisCall:
        logger.warning("status callback refused: its address was not issued for this call")
        raise HTTPException(status_code=403, detail="this callback address is not for this call") from None
    except RecordNotSaved:  # neither the database nor the journal took it: Exotel retries
        raise HTTPException(status_code=503, detail="call records unavailable") from None
    note = {True: "", False: " (no change)", None: " (journalled until the database answers)"}[changed]
    logger.bind(call_sid=update.call_sid).info(f"status callback: {update.status}{note}")
    return {"status": "ok"}
