"""The call-record store: calls by Sid, and resumable campaign runs (SQLite or PostgreSQL).

    store = await CallStore.open(settings_database_url, migrate=True)
    ...
    await store.close()

See `bot.store.repository` for the rules (status ordering, lead claiming, resume).
"""

from bot.exotel.call_status import CALL_STATUSES, TERMINAL_CALL_STATUSES
from bot.store.models import (
    LEAD_STATES,
    Base,
    CallRecord,
    CampaignLead,
    CampaignRun,
    ServerWorker,
)
from bot.store.repository import (
    CallbackNotForThisCall,
    CallStore,
    KnownCall,
    LeadInput,
    RunProgress,
    StatusUpdate,
    call_to_dict,
    default_database_url,
    normalize_database_url,
    normalize_status,
)

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
    "StatusUpdate",
    "call_to_dict",
    "default_database_url",
    "normalize_database_url",
    "normalize_status",
]
