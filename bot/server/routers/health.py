"""Liveness for load balancers and the CLI."""

import os

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from bot.server.services import Services, services

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(state: Services = Depends(services)) -> JSONResponse:
    """Up, with this worker process's live calls and event-loop lag (and which process answered).

    503 tells a load balancer to send new calls elsewhere: "draining" while the process is
    stopping (its live calls are finishing; new ones are refused), "full" while it holds
    LIVE_CALL_LIMIT calls (a call that arrives anyway is still served). With several workers
    the supervisor hands this request to the least busy one, so "full" means all of them are."""
    live = len(state.live_calls)
    limit = state.settings.live_call_limit
    status = "draining" if state.drain.draining else "full" if limit and live >= limit else "ok"
    body = {"status": status, "live_calls": live, "live_call_limit": limit or None,
            "worker_pid": os.getpid(), "loop_lag": state.loop_monitor.summary()}
    return JSONResponse(body, status_code=200 if status == "ok" else 503)
