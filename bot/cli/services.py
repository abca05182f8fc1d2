"""What the CLI needs to dial and read records in its own process: the store, the Exotel
client and the dialler, built from the same settings as the server (they share the database
and the speech cache; the server takes the media sockets and status callbacks)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from bot.config.campaigns import CampaignBook
from bot.config.private_files import private_folder
from bot.config.settings import Settings
from bot.exotel.signing import signing_key
from bot.store import CallStore
from bot.store.database_check import open_store
from bot.store.durable import DurableRecords
from pipelines.speech_cache import speech_cache_for


@dataclass
class CliServices:
    settings: Settings
    store: CallStore
    campaigns: CampaignBook
    dialer: Any = None
    exotel: Any = None  # the REST client, when dialling


@asynccontextmanager
async def cli_services(settings: Settings, *, dialling: bool):
    """Open the store (and, for dialling, the Exotel client and dialler); close them after. A
    database that can't be opened raises DatabaseUnavailable (one line for the CLI to print)."""
    from bot.dialing.dialer import Dialer, exotel_client_for

    private_folder(settings.data_dir)
    store = await open_store(settings.store_url, migrate=True, timeout_secs=settings.database_timeout_secs)
    records = DurableRecords.for_settings(store, settings)  # dial records survive an outage (journal)
    client = None
    try:
        services = CliServices(settings, store, CampaignBook(settings.campaigns_dir))
        if dialling:
            settings.require_exotel()
            client = exotel_client_for(settings)
            records.start()  # a long campaign replays what an outage journalled, server or not
            services.exotel = client
            services.dialer = Dialer(settings, records, client, speech_cache_for(settings),
                                     signing_key(settings))
        yield services
    finally:
        if client is not None:
            await client.aclose()
        await records.stop()
        await store.close()
