"""Campaign runs over HTTP: POST /campaigns (a leads CSV, a campaign name, options),
GET /campaigns/{id} (progress by state and outcome), POST /campaigns/{id}/pause|resume|cancel.

Everything is checked before a run is stored (and so before any phone rings): the options, the
campaign (a name from configs/, never a path), the file's size, encoding and phone column;
bad rows are reported by line and left out. Uploading the same file for the same campaign
while its run is unfinished resumes that run.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from datetime import time
from typing import Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from loguru import logger

from bot.dialing.campaign_options import CampaignOptions, parse_window
from bot.dialing.lead_files import read_lead_rows
from bot.server.routers.calls import require_token
from bot.server.services import Services, services

router = APIRouter(tags=["campaigns"])
MAX_LEADS_FILE_BYTES = 20 * 1024 * 1024
MAX_BODY_BYTES = MAX_LEADS_FILE_BYTES + 64 * 1024
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_ONE_UPLOAD_AT_A_TIME = asyncio.Semaphore(1)  # each holds the file a few times over while it is read


def _window(text: str) -> tuple[time, time]:
    try:
        return parse_window(text)
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None


def _run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise HTTPException(status_code=404, detail="no such campaign run")
    return run_id


async def _campaigns(state: Services) -> Any:
    """The node's campaign control (bot/jobs/campaigns.py); 503 where this node cannot run campaigns."""
    from bot.jobs.campaigns import Campaigns
    from bot.server.campaign_jobs import campaign_jobs_app

    if state.store is None:
        raise HTTPException(status_code=503, detail="call records unavailable")
    try:
        app = await campaign_jobs_app(state)
    except LookupError as error:
        raise HTTPException(status_code=503, detail=str(error)) from None
    return Campaigns(state.store, app, str(state.settings.exotel_account_sid or "simulated"))


@router.post("/campaigns", status_code=201, dependencies=[Depends(require_token)], max_body_size=MAX_BODY_BYTES)
async def start_campaign(
    leads: UploadFile = File(..., description="CSV: a phone column (phone/to/number/mobile); id, name, timezone, ..."),
    campaign: str = Form(..., max_length=100, description="Campaign name (a YAML in configs/)."),
    concurrency: int = Form(5, ge=1, le=1000),
    calls_per_minute: int = Form(60, ge=1, le=200),
    window: str = Form("10:00-19:00", max_length=40, description="Calling window in each lead's time zone."),
    timezone: str = Form("Asia/Kolkata", max_length=64, description="Time zone of leads without one."),
    max_attempts: int = Form(3, ge=1, le=10),
    retry_delay_secs: float = Form(1800.0, ge=0, le=7 * 24 * 3600),
    state: Services = Depends(services),
) -> dict[str, Any]:
    """Start (or resume) a run of `campaign` over the uploaded leads; 201 with its id and the bad rows."""
    if campaign not in state.campaigns.names():
        raise HTTPException(status_code=404, detail=f"no campaign {campaign[:100]!r}; have {state.campaigns.names()}")
    start, end = _window(window)
    try:
        options = CampaignOptions(concurrency=concurrency, calls_per_minute=calls_per_minute, window_start=start,
                                  window_end=end, timezone=timezone, max_attempts=max_attempts,
                                  retry_delay_secs=retry_delay_secs)
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    content = await leads.read(MAX_LEADS_FILE_BYTES + 1)
    if len(content) > MAX_LEADS_FILE_BYTES:
        raise HTTPException(status_code=413, detail=f"the leads file is over {MAX_LEADS_FILE_BYTES // 2**20} MB")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(status_code=422, detail="the leads file is not UTF-8 text") from None
    chosen = state.campaigns.get(campaign, campaign)
    try:
        async with _ONE_UPLOAD_AT_A_TIME:  # a big file is parsed in a thread, off the calls' event loop
            parsed = await asyncio.to_thread(read_lead_rows, io.StringIO(text, newline=""), "the leads file",
                                             frozenset(), chosen.phones)
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    except Exception as error:  # the csv module's own errors (e.g. a field over its size limit)
        raise HTTPException(status_code=422, detail=f"the leads file is not a readable CSV: {str(error)[:120]}") from None
    if not parsed[0]:
        raise HTTPException(status_code=422, detail=f"no lead to dial: {len(parsed[1])} bad row(s)")
    control = await _campaigns(state)
    source = f"upload:{await asyncio.to_thread(lambda: hashlib.sha256(content).hexdigest())}"
    started = await control.start_leads(chosen, parsed, options, source)
    logger.bind(run_id=started.run_id).info(
        f"campaign {campaign} {'resumed' if started.resumed else 'started'}: {started.added} lead(s) added, "
        f"{len(started.bad_rows)} bad row(s)")
    return {"run_id": started.run_id, "campaign": campaign, "added": started.added, "resumed": started.resumed,
            "bad_rows": [{"line": bad.line, "reason": bad.reason} for bad in started.bad_rows]}


@router.get("/campaigns/{run_id}", dependencies=[Depends(require_token)])
async def campaign_progress(run_id: str, state: Services = Depends(services)) -> dict[str, Any]:
    """Where the run is: its state, lead counts by state and by outcome, leads to reconcile."""
    if state.store is None:
        raise HTTPException(status_code=503, detail="call records unavailable")
    progress = await state.store.run_progress(_run_id(run_id))
    if progress is None:
        raise HTTPException(status_code=404, detail="no such campaign run")
    return {"run_id": progress.run_id, "campaign": progress.campaign, "state": progress.state,
            "finished": progress.finished, "total": progress.total, "counts": progress.counts,
            "outcomes": progress.outcomes, "to_reconcile": len(progress.to_reconcile),
            "next_attempt_at": progress.next_attempt_at.isoformat() if progress.next_attempt_at else None,
            "created_at": progress.created_at.isoformat()}


@router.post("/campaigns/{run_id}/{action}", dependencies=[Depends(require_token)])
async def control_campaign(run_id: str, action: str, state: Services = Depends(services)) -> dict[str, Any]:
    """pause (no new dial starts), resume, or cancel (leads not yet dialled are skipped)."""
    if action not in ("pause", "resume", "cancel"):
        raise HTTPException(status_code=404, detail="no such action (pause, resume or cancel)")
    if state.store is None:
        raise HTTPException(status_code=503, detail="call records unavailable")
    if await state.store.get_run(_run_id(run_id)) is None:
        raise HTTPException(status_code=404, detail="no such campaign run")
    control = await _campaigns(state)
    changed = await getattr(control, action)(run_id)
    progress = await state.store.run_progress(run_id)
    current = progress.state if progress else "unknown"
    if not changed:
        raise HTTPException(status_code=409, detail=f"cannot {action} a run that is {current}")
    logger.bind(run_id=run_id).info(f"campaign run {action}: now {current}")
    return {"run_id": run_id, "state": current}
