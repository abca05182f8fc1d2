"""Claiming a lead for a dial under the limits every job worker shares.

One transaction decides whether a lead may be dialled now and, if so, claims it
(pending -> dialling, attempts + 1) and writes a dial grant. Inside it: the run must be
running, the lead due, the run's live leads (dialling or in-call) under its concurrency, and
the grants of the Exotel account and of the run in the last window under their calls-per-
minute limits. On PostgreSQL the transaction first takes an advisory lock on the account, so
claims for one account are decided one at a time across all workers and machines (the time is
the database's clock, the same for every worker); on SQLite `BEGIN IMMEDIATE` serializes
every write already.

The window is the minute plus a margin (`DEFAULT_WINDOW_SECS`): a grant is taken just before
the REST request leaves, and requests take a variable few milliseconds to arrive, so Exotel
counting arrival times must still see no more than the limit in any 60 seconds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text, update

from bot.config.utc import as_utc
from bot.store.engine import Database
from bot.store.models import LIVE_LEAD_STATES, CampaignLead, CampaignRun, DialGrant, utcnow

DEFAULT_WINDOW_SECS = 62.0


@dataclass(frozen=True)
class ClaimResult:
    """What a claim decided: `claimed`, or why not (and until when, where that is known).

    outcome: claimed | not-pending | not-running | not-due | full | rate-limited
    """

    outcome: str
    lead: CampaignLead | None = None
    run: CampaignRun | None = None
    retry_at: datetime | None = None  # not-due / rate-limited: when to try again
    granted_clock: float | None = None  # the event loop's clock when the limits were taken (after any wait)

    @property
    def claimed(self) -> bool:
        return self.outcome == "claimed"


def _account_lock_key(account: str) -> int:
    """A stable 63-bit key for pg_advisory_xact_lock (Python's hash() differs per process)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(f"dial:{account}".encode(), digest_size=8).digest(), "big") >> 1


class DialClaims(Database):
    """The dial-claim queries of the store (`CallStore`)."""

    async def claim_for_dial(self, lead_row_id: int, *, account: str, account_per_minute: int,
                             window_secs: float = DEFAULT_WINDOW_SECS, now: datetime | None = None) -> ClaimResult:
        """Claim the lead for one dial if every shared limit allows it now (see the module doc)."""
        loop = asyncio.get_running_loop()
        async with self._write() as session:
            if self.is_sqlite:  # BEGIN IMMEDIATE: the write lock, waited for here, before the time is read
                await session.execute(text("SELECT 1"))
            else:
                await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _account_lock_key(account)})
                now = now or as_utc((await session.execute(text("SELECT clock_timestamp()"))).scalar_one())
            granted_clock = loop.time()
            now = as_utc(now) or utcnow()
            lead = await session.get(CampaignLead, lead_row_id, populate_existing=True)
            if lead is None or lead.state != "pending":
                return ClaimResult("not-pending", lead)
            run = await session.get(CampaignRun, lead.run_id, populate_existing=True)
            if run is None or run.state != "running":
                return ClaimResult("not-running", lead, run)
            due = as_utc(lead.next_attempt_at)
            if due is not None and due > now:
                return ClaimResult("not-due", lead, run, due)
            options = run.options or {}
            live = (await session.execute(
                select(func.count()).where(CampaignLead.run_id == run.id, CampaignLead.state.in_(LIVE_LEAD_STATES))
            )).scalar_one()
            if live >= int(options.get("concurrency", 1)):
                return ClaimResult("full", lead, run)
            since = now - timedelta(seconds=window_secs)
            for column, key, limit in ((DialGrant.account, account, account_per_minute),
                                       (DialGrant.run_id, run.id, int(options.get("calls_per_minute", 1)))):
                count, oldest = (await session.execute(
                    select(func.count(), func.min(DialGrant.granted_at)).where(column == key, DialGrant.granted_at > since)
                )).one()
                if count >= limit:
                    frees_at = (as_utc(oldest) or now) + timedelta(seconds=window_secs)
                    return ClaimResult("rate-limited", lead, run, frees_at)
            moved = await session.execute(
                update(CampaignLead)
                .where(CampaignLead.id == lead_row_id, CampaignLead.state == "pending")
                .values(state="dialling", attempts=CampaignLead.attempts + 1, claimed_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]  # settled (e.g. cancelled) since it was read
                return ClaimResult("not-pending", lead, run)
            session.add(DialGrant(account=account, run_id=run.id, lead_row_id=lead_row_id, granted_at=now))
            await session.flush()
            claimed = await session.get(CampaignLead, lead_row_id, populate_existing=True)
            return ClaimResult("claimed", claimed, run, granted_clock=granted_clock)

    async def forget_old_grants(self, older_than: datetime) -> int:
        """Drop grants no window looks at any more (the sweep calls this)."""
        async with self._write() as session:
            result = await session.execute(delete(DialGrant).where(DialGrant.granted_at < as_utc(older_than)))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]  # a DELETE's CursorResult

    async def dial_grant_times(self, account: str) -> list[datetime]:
        """Every grant of the account still kept, oldest first (for benches and tests)."""
        async with self._read() as session:
            rows = (await session.execute(
                select(DialGrant.granted_at).where(DialGrant.account == account).order_by(DialGrant.granted_at)
            )).scalars()
            return [as_utc(at) for at in rows if at is not None]  # type: ignore[misc]
