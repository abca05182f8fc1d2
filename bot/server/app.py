"""The FastAPI application, built by a factory so tests can build their own."""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI
from loguru import logger

from bot import __version__
from bot.config.campaigns import CampaignBook
from bot.config.private_files import private_folder
from bot.config.settings import Settings
from bot.exotel.signing import signing_key
from bot.server import uvicorn_compat
from bot.server.call_sink import CallSink
from bot.server.drain import Drain, DrainMiddleware
from bot.server.loop_monitor import LoopLagMonitor
from bot.server.routers import calls, exotel_connect, health, media, webhooks
from bot.server.routers import campaigns as campaign_routes
from bot.server.services import Services
from pipelines.call_session import CallSession
from pipelines.compat import require_supported
from pipelines.offline import check_offline_engines
from pipelines.speech_cache import speech_cache_for


def _warn_without_espeak(campaigns: list) -> None:
    """A Hindi campaign speaks offline with espeak-ng's Hindi voice; without the program it
    falls back to Piper's English voice, which a user should hear about once, not discover."""
    from pipelines.providers.espeak import espeak_path

    hindi = [c.name for c in campaigns if c.language.lower().split("-")[0] == "hi"]
    if hindi and espeak_path() is None:
        logger.warning(f"espeak-ng is not installed: campaigns {', '.join(hindi)} speak offline in Piper's "
                       "English voice (apt-get install espeak-ng gives them its Hindi voice)")


def _return_freed_memory() -> None:
    """Hand the memory start-up freed back to the OS (glibc keeps it otherwise: ~10 MB of RSS)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _warm_up(settings: Settings, campaigns: CampaignBook) -> None:
    """Build (not run) one call pipeline per campaign, so the first real call doesn't pay for
    first-use imports and model sessions (about 100 ms of its greeting otherwise)."""
    from loguru import logger

    from bot.server.call_runner import build_transport
    from pipelines.builder import build_call_pipeline
    from pipelines.call_session import CallSession
    from pipelines.offline import campaign_engines
    from pipelines.providers.silero import shared_silero_session
    from serializers.exotel_events import StreamStart

    for rate in (8000, 16000):  # Silero's two rates: specialising a graph takes ~0.1 s
        shared_silero_session(rate)
    if any("whisper" in campaign_engines(campaign, settings) for campaign in campaigns.all()):
        from pipelines.providers.whisper_stt import shared_whisper_model

        shared_whisper_model()  # the offline STT stand-in: load its model before the first call
    for campaign in campaigns.all():
        try:
            session = CallSession.from_handshake(StreamStart(stream_sid="warm-up", call_sid="warm-up"), {})
            transport = build_transport(object(), session, settings, [])  # type: ignore[arg-type]
            build_call_pipeline(session, campaign, transport, settings)
        except Exception as error:  # warming up is an optimisation, never a reason not to start
            logger.warning(f"warm-up of campaign {campaign.name} failed: {error}")


async def _open_services(services: Services) -> None:
    """The call-record store (migrated to the latest schema), this process's heartbeat and
    sweep for dead processes' calls (bot/server/call_ownership.py) and, with credentials, the dialler."""
    from bot.dialing.dialer import Dialer, exotel_client_for
    from bot.server.call_ownership import CallOwnership
    from bot.store.database_check import open_store
    from bot.store.durable import DurableRecords

    settings = services.settings
    assert settings.database_url is not None  # settings fill it in
    store = services.store = await open_store(settings.database_url, migrate=True,
                                              timeout_secs=settings.database_timeout_secs)
    records = services.records = DurableRecords.for_settings(store, settings)
    records.start()  # replays the journal (record writes an outage left) now and while it holds any
    services.ownership = CallOwnership(store, settings)
    await services.ownership.start()
    services.call_sink = CallSink(records, services.campaigns)
    if settings.exotel_configured:
        services.exotel = exotel_client_for(settings)
        services.dialer = Dialer(settings, records, services.exotel, services.speech_cache,
                                 services.signing_key, services.background)
    from bot.server.campaign_jobs import open_campaign_jobs

    await open_campaign_jobs(services)


async def _close_services(services: Services) -> None:
    """Graceful shutdown: let live calls finish writing their records before the store closes."""
    for _ in range(150):  # up to 15 s: after the drain, uvicorn has closed any socket left
        if not services.live_calls:
            break
        await asyncio.sleep(0.1)
    await services.call_sink.drain()
    from bot.server.campaign_jobs import close_campaign_jobs

    await close_campaign_jobs(services)
    if services.ownership is not None:
        await services.ownership.stop()
    if services.exotel is not None:
        await services.exotel.aclose()
    if services.records is not None:
        await services.records.stop()
    if services.store is not None:
        await services.store.close()


def create_app_from_env() -> FastAPI:
    """The app for one worker process of a multi-process server (settings read in the worker)."""
    from bot.config.logging_setup import setup_logging
    from bot.config.settings import load_settings

    settings = load_settings()
    setup_logging(settings.log_level)
    return create_app(settings)


def create_app(settings: Settings) -> FastAPI:
    """Load campaigns (failing fast on a bad file) and wire the routers. Refuses to start, with
    one line, if an installed dependency lacks a name calls need (pipelines/compat)."""
    require_supported(uvicorn_compat)
    campaigns = CampaignBook(settings.campaigns_dir)
    campaigns.require(settings.default_campaign, "DEFAULT_CAMPAIGN")
    check_offline_engines(campaigns.all(), settings)  # the offline extra, where a campaign needs it: one line
    private_folder(settings.data_dir)  # records, recordings, secrets: the server's user only

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load each campaign's voice once per process before the first call needs it.
        from pipelines.voices import effective_tts

        voices = {effective_tts(c, settings).voice for c in campaigns.all()
                  if effective_tts(c, settings).provider == "piper"}
        _warn_without_espeak(campaigns.all())
        if voices:  # Piper (the offline extra) is imported only where a campaign speaks with it
            from pipelines.providers.piper import load_voice

            for voice in voices:
                await asyncio.to_thread(load_voice, voice)
        # The apology a call plays when its remote voice fails: ready before the first call.
        from pipelines.apology import prepare_fallback_apologies

        await prepare_fallback_apologies(campaigns.all(), settings, services.speech_cache)
        _warm_up(settings, campaigns)
        await _open_services(services)
        # What start-up built (modules, models, campaigns: ~200k objects) lives as long as the
        # process. Left to the collector, every full collection walks it: ~90 ms with every
        # call's audio on hold. Frozen, it is skipped; only calls' own objects are scanned.
        gc.collect()
        gc.freeze()
        _return_freed_memory()  # what start-up used only for a moment (graph specialising, migrations)
        services.loop_monitor.start()
        try:
            yield
        finally:
            await services.loop_monitor.stop()
            await _close_services(services)
            # Collect what the calls left in cycles (their resamplers among it) while the
            # extension modules can still free it: left to interpreter exit, nanobind reports
            # each native object still alive then as a leak.
            gc.unfreeze()
            gc.collect()

    live_calls: dict[str, CallSession] = {}
    services = Services(
        settings=settings, campaigns=campaigns, signing_key=signing_key(settings),
        speech_cache=speech_cache_for(settings), loop_monitor=LoopLagMonitor(),
        live_calls=live_calls, drain=Drain(live_calls, settings.shutdown_grace_secs),
        call_sink=CallSink(None, campaigns),
    )
    app = FastAPI(title="Exotel voice agent", version=__version__, lifespan=lifespan)
    app.state.services = services
    app.include_router(health.router)
    app.include_router(media.router)
    app.include_router(exotel_connect.router)
    app.include_router(calls.router)
    app.include_router(campaign_routes.router)
    app.include_router(webhooks.router)
    app.add_middleware(DrainMiddleware, drain=services.drain)
    return app
