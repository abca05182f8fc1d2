"""`CallStore`: the call-record store, one object per process over one database.

    store = await CallStore.open(url, migrate=True)
    ...
    await store.close()

Its parts, one job each: the engine, sessions and schema (engine.py), call records
(calls.py), campaign runs and their leads (runs.py), dial claims under shared limits
(dial_claims.py), which process runs each live call
(owners.py). The JSON shape of a record is record_json.py's; writes that must outlive a
database outage go through `DurableRecords` (durable.py).
"""

from __future__ import annotations

from bot.store.calls import CallRecords
from bot.store.dial_claims import DialClaims
from bot.store.owners import CallOwnershipQueries
from bot.store.runs import CampaignRuns


class CallStore(CallRecords, CampaignRuns, DialClaims, CallOwnershipQueries):
    """Call records and campaign runs. Open with `await CallStore.open(url)`; see the module doc."""
