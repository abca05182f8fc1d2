"""Exotel's status callbacks: idempotent updates of the call record (form or JSON bodies).

Exotel does not sign its callbacks, so the address we hand it for each dial carries that
dial's ref and an HMAC of it. A callback is taken only for the call that ref was issued
for: the record of its CallSid must exist (we placed the call) and carry the same ref, so a
leaked callback address cannot touch any other call, nor create records.

Exotel is answered 200 once the update is in the database or, while the database is
unavailable, in the journal (replayed later; the store checks the ref when it writes it); 503
when neither took it, so Exotel retries.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from loguru import logger

from bot.exotel.callback_refs import ref_matches
from bot.exotel.callbacks import InvalidStatusCallback, StatusUpdate, is_form, parse_status_callback, status_update
from bot.exotel.signing import verify
from bot.store import CallbackNotForThisCall
from bot.store.durable import RecordNotSaved, RecordsUnavailable
from bot.store.models import utcnow

router = APIRouter(tags=["webhooks"])
MAX_CALLBACK_BYTES = 64 * 1024  # Exotel's callbacks are a few hundred bytes: larger is 413
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
        custom_field = await state.records.dial_custom_field(update.call_sid, RECORD_WAIT_SECS)
        if not ref_matches(custom_field, ref):
            logger.warning("status callback refused: its address was not issued for this call")
            raise HTTPException(status_code=403, detail="this callback address is not for this call")
    except RecordsUnavailable:
        pass  # the store can't say now; it checks the ref when it writes the update (journal replay)
    try:
        changed = await _apply_when_dialled(state.records, update, ref)
    except CallbackNotForThisCall:
        logger.warning("status callback refused: its address was not issued for this call")
        raise HTTPException(status_code=403, detail="this callback address is not for this call") from None
    except RecordNotSaved:  # neither the database nor the journal took it: Exotel retries
        raise HTTPException(status_code=503, detail="call records unavailable") from None
    note = {True: "", False: " (no change)", None: " (journalled until the database answers)"}[changed]
    logger.bind(call_sid=update.call_sid).info(f"status callback: {update.status}{note}")
    return {"status": "ok"}


async def _apply_when_dialled(records: Any, status: StatusUpdate, ref: str) -> bool | None:
    """Apply the update; the store checks the ref in the write's own transaction. A dial the
    journal still holds (the database just came back and the journal is being replayed) has no
    row yet, so the store can't match the ref: the update waits up to RECORD_WAIT_SECS for it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_WAIT_SECS
    last_try = False
    while True:
        try:
            return await records.apply_status(status, expected_ref=ref)
        except CallbackNotForThisCall:
            if last_try or loop.time() >= deadline:
                raise
            if ref_matches(await records.journalled_custom_field(status.call_sid), ref):
                await asyncio.sleep(0.25)  # the dial is still on its way to the database
            else:
                last_try = True  # gone from the journal: in the database now, or never there
