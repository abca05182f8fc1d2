"""Liveness for load balancers and the CLI."""

import os

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict:
    """Up, with the number of live calls in this worker process (and which process answered)."""
    return {"status": "ok", "live_calls": len(request.app.state.live_calls), "worker_pid": os.getpid()}
