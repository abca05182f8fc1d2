"""Run a campaign: dial a CSV of leads with limits, retries and a calling window, resumably.

State lives in the call-record store (campaign_runs / campaign_leads), so a run that crashed
or was stopped with Ctrl-C carries on where it was without calling anyone twice: a lead is
claimed (committed) before its REST request, leads left mid-dial without a Sid are reported
for reconciliation instead of redialled, and leads in a call are settled from their record.

A database outage pauses a run, never ends it or fails a lead: every lead-state write and
read the run depends on is retried until the database answers again (a call in progress
meanwhile keeps its record through the journal: bot/store/durable.py).
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from loguru import logger

from bot.config.campaigns import Campaign, PhoneRules
from bot.config.lead_limits import LeadError, check_lead
from bot.config.phone import InvalidPhoneNumber, mask_phone, normalize_indian_phone
from bot.exotel.call_status import call_is_over
from bot.exotel.errors import ExotelError
from bot.store import CallStore, LeadInput
from bot.store.durable import is_outage, retry_while_unavailable

PHONE_COLUMNS = ("phone", "to", "number", "mobile", "phone_number")


@dataclass
class RunnerOptions:
    """How hard and when to dial."""

    concurrency: int = 5
    calls_per_minute: int = 60
    window_start: time = time(10, 0)
    window_end: time = time(19, 0)
    timezone: str = "Asia/Kolkata"
    max_attempts: int = 3
    retry_delay_secs: float = 1800.0
    retry_statuses: frozenset[str] = frozenset({"busy", "no-answer", "failed"})
    do_not_call: frozenset[str] = frozenset()
    poll_secs: float = 1.0
    call_timeout_secs: float = 3600.0

    def __post_init__(self) -> None:
        """Refuse, before any dial, values that would stall the run (no slot, no rate, no
        attempt) or quietly dial in another time zone; the message is one line."""
        for name in ("concurrency", "calls_per_minute", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.retry_delay_secs < 0:
            raise ValueError(f"retry-delay must not be negative (got {self.retry_delay_secs:g})")
        if self.window_start >= self.window_end:
            raise ValueError(f"the calling window must start before it ends (got {self.window_start:%H:%M}-"
                             f"{self.window_end:%H:%M})")
        if not known_timezone(self.timezone):
            raise ValueError(f"unknown time zone {self.timezone!r} (give an IANA name such as Asia/Kolkata)")


def known_timezone(name: str) -> bool:
    """An IANA zone this machine knows (`Mars/Olympus`, '' and paths are not)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@dataclass
class BadRow:
    line: int
    reason: str


@dataclass
class LoadReport:
    run_id: str
    added: int
    resumed: bool
    bad_rows: list[BadRow] = field(default_factory=list)
    skipped_dnc: int = 0


def read_leads(path: Path, dnc: frozenset[str], phones: PhoneRules | None = None,
               ) -> tuple[list[LeadInput], list[BadRow], int]:
    """Parse the CSV: a phone column (phone/to/number/mobile), optional id, name, timezone,
    anything else kept on the lead. Bad rows come back with their line number; a number the
    campaign's `phones` rules do not dial is a bad row."""
    phones = phones or PhoneRules()
    leads, bad, skipped = [], [], 0
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not any(c.strip().lower() in PHONE_COLUMNS for c in reader.fieldnames):
            raise ValueError(f"{path}: no phone column (one of {', '.join(PHONE_COLUMNS)})")
        for row in reader:
            line = reader.line_num
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
            raw = next((row[c] for c in PHONE_COLUMNS if row.get(c)), "")
            try:
                phone = phones.normalize(raw)
            except InvalidPhoneNumber as error:  # shown to whoever wrote the file, never logged
                bad.append(BadRow(line, error.for_user))
                continue
            if phone in dnc:
                skipped += 1
                continue
            lead_id = row.get("id") or row.get("lead_id") or phone
            if lead_id in seen:
                bad.append(BadRow(line, f"duplicate lead {lead_id!r}"))
                continue
            if row.get("timezone") and not known_timezone(row["timezone"]):
                bad.append(BadRow(line, f"unknown time zone {row['timezone'][:40]!r}"))
                continue
            payload = {k: v for k, v in row.items() if k not in PHONE_COLUMNS and v}
            payload["id"] = lead_id
            try:
                check_lead(payload)
            except LeadError as error:
                bad.append(BadRow(line, str(error)))
                continue
            seen.add(lead_id)
            leads.append(LeadInput(line_number=line, lead_id=lead_id, phone=phone, payload=payload))
    return leads, bad, skipped


def read_dnc(path: Path | None) -> frozenset[str]:
    """A do-not-call list: one number per line (any format), '#' comments allowed."""
    if path is None:
        return frozenset()
    numbers = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                numbers.add(normalize_indian_phone(line, allow_foreign=True))  # blocks any country
            except InvalidPhoneNumber:
                logger.warning(f"do-not-call list: unreadable entry {mask_phone(line)}")
    return frozenset(numbers)


def next_window_start(now: datetime, lead_tz: str, options: RunnerOptions) -> datetime | None:
    """None if `now` is inside the lead's calling window, else when the window next opens (UTC)."""
    try:
        zone = ZoneInfo(lead_tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo(options.timezone)
    local = now.astimezone(zone)
    if options.window_start <= local.time() < options.window_end:
        return None
    day = local.date() if local.time() < options.window_start else local.date() + timedelta(days=1)
    return datetime.combine(day, options.window_start, tzinfo=zone).astimezone(UTC)


class CampaignRunner:
    """Dials one run's leads until every lead is done, failed or skipped."""

    def __init__(self, store: CallStore, dialer: Any, campaign: Campaign, options: RunnerOptions,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 on_event: Callable[[str, dict[str, Any]], None] | None = None):
        self._store = store
        self._dialer = dialer
        self._campaign = campaign
        self._options = options
        self._clock = clock
        self._emit = on_event or (lambda kind, data: None)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._rate = RateLimitItemPerMinute(options.calls_per_minute)
        self._slots = asyncio.Semaphore(options.concurrency)
        self.in_flight: set[asyncio.Task] = set()

    async def load(self, path: Path) -> LoadReport:
        """Create the run (or resume the unfinished run of the same file and campaign)."""
        leads, bad, skipped = read_leads(path, self._options.do_not_call, self._campaign.phones)
        source = str(path.resolve())
        for progress in await self._store.unfinished_runs():
            if progress.source_file == source and progress.campaign == self._campaign.name:
                added = await self._store.add_leads(progress.run_id, leads)
                return LoadReport(progress.run_id, added, True, bad, skipped)
        run = await self._store.create_run(self._campaign.name, source)
        added = await self._store.add_leads(run.id, leads)
        return LoadReport(run.id, added, False, bad, skipped)

    async def run(self, run_id: str) -> dict[str, int]:
        """Dial until nothing is left; returns the lead counts per state."""
        await self._settle_in_call(run_id)
        while True:
            progress = await retry_while_unavailable(lambda: self._store.run_progress(run_id), "read the run")
            if progress is None:
                raise ValueError(f"no campaign run {run_id}")
            active = progress.counts.get("pending", 0) + progress.counts.get("in-call", 0)
            if active == 0 and not self.in_flight:
                return progress.counts
            await self._slots.acquire()
            try:
                lead = await retry_while_unavailable(
                    lambda: self._store.claim_next_lead(run_id, self._clock()), "claim the next lead")
            except BaseException:
                self._slots.release()
                raise
            if lead is None:
                self._slots.release()
                await asyncio.sleep(self._options.poll_secs)
                continue
            task = asyncio.create_task(self._work(lead))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def _work(self, lead: Any) -> None:
        try:
            await self._dial_and_follow(lead)
        except Exception as error:  # one bad lead never stops the run
            logger.exception(f"lead on line {lead.line_number} failed: {error}")
            reason = str(error)[:300]
            await retry_while_unavailable(
                lambda: self._store.finish_lead(lead.id, "failed", error=reason), "settle a failed lead")
        finally:
            self._slots.release()

    async def _dial_and_follow(self, lead: Any) -> None:
        now = self._clock()
        opens = next_window_start(now, lead.payload.get("timezone") or self._options.timezone, self._options)
        if opens is not None:
            await retry_while_unavailable(lambda: self._store.reschedule_lead(
                lead.id, opens, status="outside-window", not_an_attempt=True), "defer a lead")
            self._emit("deferred", {"line": lead.line_number, "until": opens.isoformat()})
            return
        while not await self._limiter.hit(self._rate, "campaign", self._campaign.name):
            await asyncio.sleep(0.2)
        try:
            result = await self._dialer.dial(lead.phone, self._campaign, dict(lead.payload), attempt=lead.attempts)
        except InvalidPhoneNumber as error:  # e.g. a resumed run whose campaign's phone rules changed
            reason = error.for_user
            await retry_while_unavailable(lambda: self._store.finish_lead(
                lead.id, "failed", status="dial-failed", error=reason), "settle a lead")
            return
        except ExotelError as error:
            self._emit("dial_error", {"line": lead.line_number, "error": str(error)})
            await self._retry_or_fail(lead, "dial-failed", str(error))
            return
        await retry_while_unavailable(lambda: self._store.mark_lead_dialled(lead.id, result.call_sid),
                                      "store the dialled call on its lead")
        self._emit("dialled", {"line": lead.line_number, "call_sid": result.call_sid})
        await self._follow(lead, result.call_sid)

    async def _follow(self, lead: Any, call_sid: str) -> None:
        """Wait for the call's terminal status (status callbacks land in the shared store)."""
        deadline = asyncio.get_running_loop().time() + self._options.call_timeout_secs
        while asyncio.get_running_loop().time() < deadline:
            try:
                record = await self._store.find_call(call_sid)
            except Exception as error:  # an outage: the record will be there when it ends
                if not is_outage(error):
                    raise
                record = None
            if record is not None and call_is_over(record.status, record.ended_at, record.end_reason):
                break
            await asyncio.sleep(self._options.poll_secs)
        else:
            await retry_while_unavailable(lambda: self._store.finish_lead(
                lead.id, "failed", status="timeout", error="no final status"), "settle a lead")
            return
        self._emit("finished", {"line": lead.line_number, "call_sid": call_sid, "status": record.status,
                                "outcome": record.outcome})
        if record.status in self._options.retry_statuses:
            await self._retry_or_fail(lead, record.status, None)
        else:
            await retry_while_unavailable(lambda: self._store.finish_lead(
                lead.id, "done", status=record.status, outcome=record.outcome), "settle a lead")

    async def _retry_or_fail(self, lead: Any, status: str, error: str | None) -> None:
        if lead.attempts >= self._options.max_attempts:
            await retry_while_unavailable(lambda: self._store.finish_lead(
                lead.id, "failed", status=status, error=error), "settle a lead")
            return
        at = self._clock() + timedelta(seconds=self._options.retry_delay_secs)
        await retry_while_unavailable(lambda: self._store.reschedule_lead(
            lead.id, at, status=status, error=error), "schedule a retry")

    async def _settle_in_call(self, run_id: str) -> None:
        """After a crash: leads whose call was placed are followed, never dialled again.

        A lead left `dialling` whose call made it into the store (the crash came between
        Exotel's answer and storing the Sid on the lead) is adopted; one with no call on
        record may or may not have reached Exotel, so it is left for a person to settle
        (`to_reconcile`), never redialled blindly."""
        for lead in await self._store.list_leads(run_id, state="dialling"):
            since = lead.updated_at - timedelta(minutes=5) if lead.updated_at else None
            placed = await self._store.calls_for_lead(self._campaign.name, lead.lead_id, since=since)
            if placed:
                await self._store.mark_lead_dialled(lead.id, placed[0].call_sid)
        for lead in await self._store.list_leads(run_id, state="in-call"):
            if lead.last_call_sid:
                await self._slots.acquire()
                task = asyncio.create_task(self._resume_follow(lead))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)

    async def _resume_follow(self, lead: Any) -> None:
        try:
            await self._follow(lead, lead.last_call_sid)
        finally:
            self._slots.release()
