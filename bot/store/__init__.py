"""The call-record store: calls by Sid, and resumable campaign runs (SQLite or PostgreSQL).

    store = await CallStore.open(settings_database_url, migrate=True)
    ...
    await store.close()

See `bot.store.call_store` for its parts: engine.py (URLs, engine, migrations), calls.py
(call records, status ordering), runs.py (campaign runs, lead claiming, resume), owners.py,
record_json.py (the API's JSON shape), record_csv.py, durable.py (writes that outlive an
outage), progress.py (a live call's transcript as it grows).
"""

from bot.exotel.call_status import CALL_STATUSES, TERMINAL_CALL_STATUSES, normalize_status
from bot.store.call_store import CallStore
from bot.store.calls import CallbackNotForThisCall, KnownCall
from bot.store.engine import default_database_url, normalize_database_url
from bot.store.models import (
    LEAD_STATES,
    Base,
    CallRecord,
    CampaignLead,
    CampaignRun,
    ServerWorker,
)
from bot.store.record_json import call_to_dict
from bot.store.runs import LeadInput, RunProgress

__all__ = [
    "CALL_STATUSES",
    "LEAD_STATES",
    "TERMINAL_CALL_STATUSES",
    "Base",
    "CallRecord",
    "CallbackNotForThisCall",
    "CallStore",
    "KnownCall",
    "CampaignLead",
    "CampaignRun",
    "LeadInput",
    "RunProgress",
    "ServerWorker",
    "call_to_dict",
    "default_database_url",
    "normalize_database_url",
    "normalize_status",
]
