"""Liveness for load balancers and the CLI."""

import os

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from bot.server.services import Services, services

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(state: Services = Depends(services)) -> JSONResponse:
    """Up, with this worker process's live calls and event-loop lag (and which process answered);
    503 with status "draining" while the process is stopping, so a load balancer sends calls
    elsewhere (its live calls are finishing; new ones are refused)."""
    draining = state.drain.draining
    body = {"status": "draining" if draining else "ok", "live_calls": len(state.live_calls),
            "worker_pid": os.getpid(), "loop_lag": state.loop_monitor.summary()}
    return JSONResponse(body, status_code=503 if draining else 200)
