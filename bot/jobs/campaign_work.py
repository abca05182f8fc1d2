"""The campaign jobs' bodies: dial a lead, settle a call, wake a run, sweep.

Each is idempotent and reads the lead table, which stays the truth: a job run twice, late, or
never (its worker was killed) costs at most a delay, never a second call.

* `dial_lead(lead)`: outside the lead's calling window -> due again when it opens (a job
  scheduled then). Else one claim under every shared limit (bot/store/dial_claims.py):
  claimed -> the REST request -> the Sid on the lead; rate-limited -> a job at the time a dial
  frees up; run full -> nothing (the next call to end wakes the run).
* `settle_call(call_sid)`: the call's record is final -> the lead is done, failed, or due
  again after the retry delay (a job scheduled then); then the run is woken.
* `wake_run(run)`: as many due leads as the run has free places get a dial job.
* `sweep()`: a scheduled job (every JOB_SWEEP_SECS) that settles what no event settled: calls
  whose end was missed (a node killed), leads a dead worker left mid-dial (reconciled with
  Exotel: its call adopted, dialled again only if Exotel has none), jobs of dead workers, runs
  nobody woke, and old dial grants.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger
from procrastinate import App

from bot.config.campaigns import CampaignBook, CampaignError
from bot.config.phone import InvalidPhoneNumber, mask_phone
from bot.config.settings import Settings
from bot.dialing.campaign_options import CampaignOptions, next_window_start
from bot.exotel.call_status import call_is_over
from bot.exotel.errors import ExotelError, ExotelNotSent, ExotelUnavailable
from bot.jobs.job_app import defer
from bot.jobs.task_names import DIAL_LEAD, QUEUE, SETTLE_CALL, SWEEP, WAKE_RUN
from bot.store import CallStore
from bot.store.models import CampaignLead, CampaignRun
from bot.store.runs import LeadClaim

RATE_JITTER_SECS = 0.25
# A claimed dial's request must leave this soon after its grant (well inside the grant window's
# margin over the minute, bot/store/dial_claims.py), or it is not sent and the lead is due again.
SEND_WITHIN_SECS = 1.0
GRANTS_KEPT = timedelta(minutes=10)


def lead_lock(lead_row_id: int) -> str:
    return f"dial-lead-{lead_row_id}"


@dataclass
class CampaignWork:
    """What the jobs need in a worker process: the store, a dialler, the campaigns, Exotel."""

    settings: Settings
    store: CallStore
    campaigns: CampaignBook
    dialer: Any  # bot.dialing.dialer.Dialer
    exotel: Any  # bot.exotel.client.ExotelClient (reconciling leads left mid-dial)
    app: App
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    extra_campaigns: dict[str, Any] = field(default_factory=dict)  # e.g. `bot run --campaign path.yaml`

    def campaign_named(self, name: str) -> Any | None:
        """The run's campaign: given to this worker, or in CAMPAIGNS_DIR (read again if it is new)."""
        if name in self.extra_campaigns:
            return self.extra_campaigns[name]
        if name not in self.campaigns.names():
            try:
                self.campaigns = CampaignBook(self.settings.campaigns_dir)
            except (CampaignError, OSError, ValueError) as error:
                logger.error(f"campaigns unreadable: {error}")
                return None
        return self.campaigns.get(name, name) if name in self.campaigns.names() else None

    def _emit(self, kind: str, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, data)

    # --- dial --------------------------------------------------------------------------------

    async def dial_lead(self, lead_row_id: int) -> str:
        """One look at one lead (see the module doc); returns what happened, for tests and logs."""
        lead = await self.store.get_lead(lead_row_id)
        if lead is None or lead.state != "pending":
            return "not-pending"
        run = await self.store.get_run(lead.run_id)
        if run is not None and run.state == "cancelled":  # a lead made due again as the run was cancelled
            await self.store.finish_lead(lead.id, "skipped", status="cancelled")
            return "cancelled"
        if run is None or run.state != "running":
            return "not-running"
        options = CampaignOptions.from_json(run.options or {})
        now = self.clock()
        opens = next_window_start(now, lead.payload.get("timezone") or options.timezone, options)
        if opens is not None:
            await self.store.defer_pending_lead(lead.id, opens, status="outside-window")
            await self.defer_dial(lead.id, at=opens)
            self._emit("deferred", line=lead.line_number, until=opens.isoformat())
            return "outside-window"
        campaign = self.campaign_named(run.campaign)
        if campaign is None:  # not this worker's: the lead stays pending for a worker that has it
            logger.bind(run_id=run.id).error(f"campaign {run.campaign!r} is unknown to this worker (CAMPAIGNS_DIR); "
                                             "its leads wait for a worker that has it")
            return "unknown-campaign"
        claim = await self.store.claim_for_dial(lead.id, account=self.account,
                                                account_per_minute=self.settings.exotel_calls_per_minute)
        if claim.outcome in ("not-due", "rate-limited") and claim.retry_at is not None:
            jitter = timedelta(seconds=random.uniform(0, RATE_JITTER_SECS)) if claim.outcome == "rate-limited" else timedelta()
            await self.defer_dial(lead.id, at=claim.retry_at + jitter)
        if not claim.claimed or claim.lead is None:
            return claim.outcome
        send_by = (claim.granted_clock or asyncio.get_running_loop().time()) + SEND_WITHIN_SECS
        return await self._dial(claim.lead, run, options, campaign, send_by)

    @property
    def account(self) -> str:
        return str(self.settings.exotel_account_sid or "simulated")

    async def _dial(self, lead: CampaignLead, run: CampaignRun, options: CampaignOptions, campaign: Any,
                    send_by: float) -> str:
        from bot.dialing.dialer import DialTooLate

        log = logger.bind(run_id=run.id)
        try:
            result = await self.dialer.dial(lead.phone, campaign, dict(lead.payload), attempt=lead.attempts,
                                            send_by=send_by)
        except (DialTooLate, ExotelNotSent) as error:  # nothing was sent: due again at once, the attempt not used
            log.warning(f"lead on line {lead.line_number}: {error}; due again")
            if await self.store.reschedule_lead(lead.id, self.clock(), status="dial-late", not_an_attempt=True,
                                                claim=LeadClaim.of(lead)):
                await self.defer_dial(lead.id)
            return "late"
        except InvalidPhoneNumber as error:  # e.g. the campaign's phone rules changed since the file was read
            await self.store.finish_lead(lead.id, "failed", status="dial-failed", error=error.for_user)
            await self.wake_run(run.id)
            return "failed"
        except ExotelUnavailable as error:
            if error.maybe_placed:  # the request may have reached Exotel: the sweep reconciles it
                log.warning(f"lead on line {lead.line_number}: dial outcome unknown ({error}); left for reconciling")
                return "unknown"
            await self._retry_or_fail(lead, run, options, "dial-failed", str(error))
            return "failed"
        except ExotelError as error:
            self._emit("dial_error", line=lead.line_number, error=str(error))
            await self._retry_or_fail(lead, run, options, "dial-failed", str(error))
            return "failed"
        if not await self.store.mark_lead_dialled(lead.id, result.call_sid, claim=LeadClaim.of(lead)):
            log.warning(f"lead on line {lead.line_number} was settled while its dial was in flight")
        self._emit("dialled", line=lead.line_number, call_sid=result.call_sid)
        # a call can end before its Sid is on the lead (an instant busy): settle it now if so
        await self.settle_call(result.call_sid)
        return "dialled"

    async def defer_dial(self, lead_row_id: int, at: datetime | None = None) -> bool:
        return await defer(self.app, DIAL_LEAD, queueing_lock=lead_lock(lead_row_id), schedule_at=at,
                           lead_row_id=lead_row_id)

    # --- settle ------------------------------------------------------------------------------

    async def settle_call(self, call_sid: str) -> str:
        """The lead of a call whose record is final: done, failed or due again; then wake its run."""
        lead = await self.store.lead_of_call(call_sid)
        if lead is None:
            return "no-lead"
        record = await self.store.find_call(call_sid)
        if record is None or not call_is_over(record.status, record.ended_at, record.end_reason):
            return "not-over"
        run = await self.store.get_run(lead.run_id)
        if run is None:
            return "no-run"
        options = CampaignOptions.from_json(run.options or {})
        self._emit("finished", line=lead.line_number, call_sid=call_sid, status=record.status, outcome=record.outcome)
        claim = LeadClaim.of(lead, call_sid)
        if record.status in options.retry_statuses:
            await self._retry_or_fail(lead, run, options, record.status, None, claim)
        else:
            await self.store.finish_lead(lead.id, "done", status=record.status, outcome=record.outcome, claim=claim)
            await self.wake_run(run.id)
        return "settled"

    async def _retry_or_fail(self, lead: CampaignLead, run: CampaignRun, options: CampaignOptions,
                             status: str, error: str | None, claim: LeadClaim | None = None) -> None:
        claim = claim or LeadClaim.of(lead)
        if lead.attempts >= options.max_attempts or run.state == "cancelled":
            await self.store.finish_lead(lead.id, "failed", status=status, error=error, claim=claim)
        else:
            at = self.clock() + timedelta(seconds=options.retry_delay_secs)
            if await self.store.reschedule_lead(lead.id, at, status=status, error=error, claim=claim):
                await self.defer_dial(lead.id, at=at)
        await self.wake_run(run.id)

    # --- wake --------------------------------------------------------------------------------

    async def wake_run(self, run_id: str) -> int:
        """Give as many due leads as the run has free places a dial job; returns how many."""
        run = await self.store.get_run(run_id)
        if run is None or run.state != "running":
            return 0
        options = CampaignOptions.from_json(run.options or {})
        free = options.concurrency - await self.store.live_lead_count(run_id)
        woken = 0
        for lead_row_id in await self.store.due_leads(run_id, self.clock(), free):
            woken += await self.defer_dial(lead_row_id)
        return woken

    # --- sweep -------------------------------------------------------------------------------

    async def sweep(self) -> dict[str, int]:
        """Settle what no event settled (see the module doc); counts of what it did."""
        done = {"settled": 0, "reconciled": 0, "stalled_jobs": 0, "woken": 0}
        now = self.clock()
        for lead in await self.store.leads_in_state("in-call", updated_before=now - timedelta(seconds=2)):
            if lead.last_call_sid and await self._guard(self.settle_call(lead.last_call_sid)) == "settled":
                done["settled"] += 1
        reconcile_before = now - timedelta(seconds=self.settings.reconcile_after_secs)
        for lead in await self.store.leads_in_state("dialling", updated_before=reconcile_before):
            if await self._guard(self.reconcile(lead)):
                done["reconciled"] += 1
        done["stalled_jobs"] = await self._guard(self._close_stalled_jobs()) or 0
        for run in await self.store.runs_in_state("running"):
            done["woken"] += await self._guard(self.wake_run(run.id)) or 0
        for run in await self.store.runs_in_state("cancelled"):  # leads made due again as it was cancelled
            await self._guard(self.store.skip_pending_leads(run.id))
        await self._guard(self.store.forget_old_grants(now - GRANTS_KEPT))
        if any(done.values()):
            logger.info(f"campaign sweep: {done}")
        return done

    async def _guard(self, work: Awaitable[Any]) -> Any:
        """One failing step of the sweep never stops the others (the next sweep tries again)."""
        try:
            return await work
        except Exception as error:
            logger.warning(f"campaign sweep step failed: {str(error)[:200]}")
            return None

    async def reconcile(self, lead: CampaignLead) -> bool:
        """A lead left `dialling` by a worker that died mid-request: adopt its call if one was
        placed (on record, or at Exotel), else make it due again without using an attempt.

        Runs RECONCILE_AFTER_SECS (2 minutes by default) after the claim, past Exotel's 45-second
        ring time: by then a call that was answered has a record (its media stream wrote it) and
        one that was not has ended and is in Exotel's call list (which leaves out calls still in
        progress). Only when neither knows a call to the number is the lead dialled again."""
        claimed = lead.claimed_at or lead.updated_at
        run = await self.store.get_run(lead.run_id)
        if run is None:
            return False
        since = claimed - timedelta(seconds=5) if claimed else None
        placed = await self.store.calls_for_lead(run.campaign, lead.lead_id, since=since)
        claim = LeadClaim.of(lead)
        if placed:
            if not await self.store.mark_lead_dialled(lead.id, placed[0].call_sid, claim=claim):
                return False  # another step settled this claim meanwhile
            await self.settle_call(placed[0].call_sid)
            logger.info(f"lead on line {lead.line_number}: mid-dial claim adopted its call {placed[0].call_sid}")
            return True
        if self.exotel is None or claimed is None:
            return False
        calls = await self.exotel.find_calls(lead.phone, claimed - timedelta(seconds=60))
        if calls:
            call = calls[0]
            if await self.store.find_call(call.sid) is None:  # its record never got written: write it now
                await self.store.record_dialled(call.sid, run.campaign, dict(lead.payload), lead.phone,
                                                attempt=lead.attempts, status="initiated")
            if call.normalized_status:
                await self.store.apply_status({"CallSid": call.sid, "Status": call.normalized_status})
            if not await self.store.mark_lead_dialled(lead.id, call.sid, claim=claim):
                return False
            await self.settle_call(call.sid)
            logger.info(f"lead on line {lead.line_number}: Exotel has its call {call.sid}; adopted")
            return True
        if await self.store.reschedule_lead(lead.id, self.clock(), status="not-placed", not_an_attempt=True,
                                            error="the dialling worker stopped before Exotel took the call",
                                            claim=claim):
            await self.defer_dial(lead.id)
            logger.info(f"lead on line {lead.line_number} ({mask_phone(lead.phone)}): Exotel never got the call; due again")
        return True

    async def _close_stalled_jobs(self) -> int:
        """Jobs a killed worker was running are closed as failed: this sweep redoes, from the
        lead table, what they were for (settling, reconciling, waking)."""
        from procrastinate.jobs import Status

        stalled = list(await self.app.job_manager.get_stalled_jobs(
            seconds_since_heartbeat=max(30.0, 3 * self.settings.job_sweep_secs)))
        for job in stalled:
            await self.app.job_manager.finish_job(job, status=Status.FAILED, delete_job=True)
        return len(stalled)


def sweep_cron(every_secs: int) -> str:
    """procrastinate's cron (croniter) takes the seconds as a sixth field, at the end."""
    return "* * * * * *" if every_secs == 1 else f"* * * * * */{every_secs}"


def register_campaign_jobs(app: App, work: CampaignWork, *, sweep_secs: int) -> None:
    """Give the app the campaign tasks, bound to this process's `work`, and the sweep's schedule.
    A job that fails (the database went away mid-job) is not retried by procrastinate (a retry
    would collide with the same lead's next job): the sweep redoes its work from the lead table."""

    @app.task(name=DIAL_LEAD, queue=QUEUE)
    async def dial_lead(lead_row_id: int) -> str:
        return await work.dial_lead(lead_row_id)

    @app.task(name=SETTLE_CALL, queue=QUEUE)
    async def settle_call(call_sid: str) -> str:
        return await work.settle_call(call_sid)

    @app.task(name=WAKE_RUN, queue=QUEUE)
    async def wake_run(run_id: str) -> int:
        return await work.wake_run(run_id)

    cron = sweep_cron(sweep_secs)

    @app.periodic(cron=cron, periodic_id="sweep")
    @app.task(name=SWEEP, queue=QUEUE, queueing_lock="campaign-sweep")
    async def sweep(timestamp: int) -> dict[str, int]:
        return await work.sweep()
