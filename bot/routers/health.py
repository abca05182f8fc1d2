"""Liveness for load balancers and the CLI."""

import os

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict:
    """Up, with this worker process's live calls and event-loop lag (and which process answered)."""
    state = request.app.state
    return {"status": "ok", "live_calls": len(state.live_calls), "worker_pid": os.getpid(),
            "loop_lag": state.loop_monitor.summary()}
