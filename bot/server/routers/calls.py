"""Place calls and read call records: POST /calls (and the seed's POST /call), GET /calls,
GET /calls/{sid} and its recording."""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from loguru import logger
from pydantic import BaseModel, Field, field_validator

from bot.config.campaigns import CampaignError
from bot.config.lead_limits import check_lead
from bot.config.object_storage import ObjectStorageError
from bot.config.phone import InvalidPhoneNumber
from bot.exotel.errors import ExotelAuthError, ExotelError, ExotelRateLimited, ExotelRequestError
from bot.server.recordings import recording_chunks
from bot.server.services import Services, services
from bot.store.call_store import CallStore
from bot.store.record_csv import calls_csv
from bot.store.record_json import call_to_dict

router = APIRouter(tags=["calls"])
MAX_CALL_REQUEST_BYTES = 64 * 1024  # a lead is at most 16 KB (bot/config/lead_limits.py)


def require_token(request: Request, held: Services = Depends(services)) -> None:
    """Bearer API_TOKEN, when one is set."""
    token = held.settings.api_token
    if token is None:
        return
    given = request.headers.get("authorization", "")
    if not given.lower().startswith("bearer ") or not secrets.compare_digest(
        given[7:].strip().encode(), token.get_secret_value().encode()
    ):
        raise HTTPException(status_code=401, detail="missing or wrong bearer token (API_TOKEN)")


class CallRequest(BaseModel):
    """A call to place: the number, the campaign, and what we know about the lead."""

    to: str = Field(max_length=40, description="The lead's phone number (Indian formats are normalised to E.164).")
    campaign: str | None = Field(
        None, max_length=100, description="Campaign name (a YAML in configs/); default campaign if empty."
    )
    lead: dict[str, Any] = Field(
        default_factory=dict,
        description="Lead fields, e.g. {id, name, ...}: name <= 80 characters, the whole lead <= 16 KB "
        "as JSON, nested <= 4 levels.",
    )

    @field_validator("lead", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        return check_lead(value)


class CallPlaced(BaseModel):
    call_sid: str
    to: str
    status: str


@router.post("/calls", response_model=CallPlaced, dependencies=[Depends(require_token)],
             max_body_size=MAX_CALL_REQUEST_BYTES)
async def place_call(body: CallRequest, state: Services = Depends(services)) -> CallPlaced:
    """Ask Exotel to dial the lead into the Voicebot flow; returns the call's Sid.

    The whole request is checked (number, campaign, lead bounds) before anything happens:
    a request that cannot be stored never makes a phone ring."""
    if body.campaign and body.campaign not in state.campaigns.names():
        raise HTTPException(status_code=404, detail=f"no campaign {body.campaign!r}; have {state.campaigns.names()}")
    try:
        campaign = state.campaigns.get(body.campaign, state.settings.default_campaign)
        campaign.phones.normalize(body.to)
    except CampaignError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except InvalidPhoneNumber as error:  # the caller's own typing, shown unmasked
        raise HTTPException(status_code=422, detail=error.for_user) from None
    if state.dialer is None:
        raise HTTPException(status_code=503, detail=state.dialer_unavailable)
    try:
        result = await state.dialer.dial(body.to, campaign, body.lead)
    except InvalidPhoneNumber as error:  # the caller's own typing, shown unmasked
        raise HTTPException(status_code=422, detail=error.for_user) from None
    except ExotelAuthError as error:
        raise HTTPException(status_code=502, detail=str(error)) from None
    except ExotelRateLimited as error:
        raise HTTPException(status_code=429, detail=str(error)) from None
    except ExotelRequestError as error:
        raise HTTPException(status_code=400, detail=f"Exotel refused the call: {error}") from None
    except ExotelError as error:
        raise HTTPException(status_code=502, detail=f"Exotel unavailable: {error}") from None
    return CallPlaced(call_sid=result.call_sid, to=result.to, status=result.status)


class SeedCallRequest(BaseModel):
    to: str = Field(max_length=40)


@router.post("/call", response_model=CallPlaced, dependencies=[Depends(require_token)],
             max_body_size=MAX_CALL_REQUEST_BYTES)
async def place_call_seed(body: SeedCallRequest, state: Services = Depends(services)) -> CallPlaced:
    """The seed system's shape: `{"to": ...}` with the default campaign."""
    return await place_call(CallRequest(to=body.to), state)


@router.get("/calls", dependencies=[Depends(require_token)])
async def list_calls(
    state: Services = Depends(services),
    campaign: str | None = None,
    status: str | None = None,
    outcome: str | None = None,
    since: datetime | None = Query(None, description="created at or after (ISO 8601)"),
    until: datetime | None = Query(None, description="created before (ISO 8601)"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    format: str = Query("json", pattern="^(json|csv)$"),
) -> Any:
    """Call records, newest first; `format=csv` for a spreadsheet."""
    store = _store(state)
    records = await store.list_calls(campaign=campaign, status=status, outcome=outcome, since=since,
                                     until=until, limit=limit, offset=offset)
    rows = [call_to_dict(record) for record in records]
    if format == "csv":
        return PlainTextResponse(calls_csv(rows), media_type="text/csv")
    return {"calls": rows, "count": len(rows)}


@router.get("/calls/{call_sid}", dependencies=[Depends(require_token)])
async def get_call(call_sid: str, state: Services = Depends(services)) -> dict[str, Any]:
    record = await _store(state).find_call(call_sid)
    if record is None:
        raise HTTPException(status_code=404, detail=f"no call {call_sid}")
    return call_to_dict(record)


@router.get("/calls/{call_sid}/recording", dependencies=[Depends(require_token)])
async def get_recording(call_sid: str, state: Services = Depends(services)) -> Response:
    """The call's stereo WAV (caller left, bot right), from whichever node or object store
    holds it, streamed. Voices are personal data: only with API_TOKEN set (403 without one),
    and only once the call has ended (409 while it is live: the file is still being written)."""
    if state.settings.api_token is None:
        raise HTTPException(status_code=403, detail="set API_TOKEN to download recordings")
    record = await _store(state).find_call(call_sid)
    if record is None:
        raise HTTPException(status_code=404, detail="no such call")
    if record.ended_at is None:
        raise HTTPException(status_code=409, detail="the call has not ended yet")
    try:
        found = await recording_chunks(state.settings, call_sid, record.recording_path)
    except ValueError:
        found = None
    except ObjectStorageError as error:
        logger.bind(call_sid=call_sid).warning(f"recording not read: {error}")
        raise HTTPException(status_code=502, detail="the object store did not answer") from None
    if found is None:
        raise HTTPException(status_code=404, detail="no recording for this call")
    headers = {"Content-Disposition": f'attachment; filename="{call_sid}.wav"'}
    if isinstance(found, Path):
        return FileResponse(found, media_type="audio/wav", headers=headers)
    return StreamingResponse(found, media_type="audio/wav", headers=headers)


def _store(state: Services) -> CallStore:
    if state.store is None:  # only before start-up has opened it
        raise HTTPException(status_code=503, detail="call records unavailable")
    return state.store
