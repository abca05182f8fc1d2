"""What one server process holds for its requests: one typed holder, set once on the app by
`create_app` (`app.state.services`) and read by routers through the `services` dependency.

The store, records, ownership, Exotel client and dialler are opened at start-up (the app's
lifespan) and are None before, and without credentials for the client and dialler.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from bot.config.campaigns import CampaignBook
from bot.config.settings import Settings
from bot.server.call_sink import CallSink
from bot.server.drain import Drain
from bot.server.loop_monitor import LoopLagMonitor
from pipelines.call_session import CallSession
from pipelines.speech_cache import SpeechCache

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bot.dialing.dialer import Dialer
    from bot.exotel.client import ExotelClient
    from bot.server.call_ownership import CallOwnership
    from bot.store.call_store import CallStore
    from bot.store.durable import DurableRecords

DIALER_UNAVAILABLE = ("dialling needs EXOTEL_ACCOUNT_SID, EXOTEL_API_KEY, EXOTEL_API_TOKEN, "
                      "EXOTEL_CALLER_ID and EXOTEL_APP_ID")


@dataclass
class Services:
    settings: Settings
    campaigns: CampaignBook
    signing_key: bytes
    speech_cache: SpeechCache
    loop_monitor: LoopLagMonitor
    live_calls: dict[str, CallSession]  # this process's live sessions: /health, and the drain ends them
    drain: Drain
    call_sink: CallSink  # replaced by the store-backed sink at start-up
    background: set[asyncio.Task] = field(default_factory=set)  # strong refs to fire-and-forget tasks
    store: CallStore | None = None
    records: DurableRecords | None = None
    ownership: CallOwnership | None = None  # this process's heartbeat and its calls' owner id
    exotel: ExotelClient | None = None
    dialer: Dialer | None = None
    dialer_unavailable: str = DIALER_UNAVAILABLE  # why `dialer` is None
    jobs: Any = None  # the campaign job app (procrastinate), once opened (bot/server/campaign_jobs.py)
    job_worker: contextlib.AsyncExitStack | None = None  # SQLite: this process's own campaign worker


def services(connection: HTTPConnection) -> Services:
    """The app's services, for a route (`Depends(services)`) or a websocket handler."""
    return services_of(connection.app)


def services_of(app: FastAPI) -> Services:
    """The services `create_app` set on `app`."""
    held: Services = app.state.services
    return held
