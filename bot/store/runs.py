"""Resumable campaign runs: a run's leads, claimed one at a time by any number of diallers.

Campaign leads move pending -> dialling -> in-call -> done | failed | pending (retry), each
step a conditional UPDATE (`... WHERE state = 'pending'`), so two processes never claim the
same lead. The dialler commits `dialling` (`claim_next_lead`) BEFORE it sends the REST request,
and stores the Sid (`mark_lead_dialled`) as soon as Exotel answers it.

The resume rule (what a restarted dialler does with a run that a crash interrupted):
* `pending` leads are claimed as usual (retries wait for their `next_attempt_at`).
* `dialling` leads are NEVER claimed again automatically: the REST request may or may not
  have reached Exotel, and a redial could ring the person twice. They are reported by
  `leads_to_reconcile(run_id)` (and counted in `run_progress(...).to_reconcile`) for someone,
  or a reconciler that asks Exotel for calls by the lead's CustomField, to settle: there was a
  call -> `mark_lead_dialled(lead, sid)`; there was none -> `reschedule_lead(lead, at)` to dial
  again, or `finish_lead(lead, state="failed")`.
* `in-call` leads have a Sid: their call record (status callbacks, `complete_from_session`)
  says how the call ended; the dialler settles them with `finish_lead` / `reschedule_lead`.
A run is unfinished while any of its leads is pending, dialling or in-call.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from bot.config.utc import as_utc
from bot.store.engine import Database
from bot.store.models import (
    ACTIVE_LEAD_STATES,
    FINAL_LEAD_STATES,
    LEAD_STATES,
    LIVE_LEAD_STATES,
    CampaignLead,
    CampaignRun,
    utcnow,
)
from bot.store.record_json import jsonable

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ADD_LEADS_CHUNK = 5000



@dataclass(frozen=True)
class LeadInput:
    """One lead of a lead file, as `add_leads` takes it (mappings with these keys work too)."""

    line_number: int
    lead_id: str
    phone: str  # E.164, e.g. +919876543210
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LeadClaim:
    """Which claim of a lead a step belongs to: its claim time and, once dialled, its call."""

    claimed_at: datetime | None
    call_sid: str | None = None

    @classmethod
    def of(cls, lead: CampaignLead, call_sid: str | None = None) -> LeadClaim:
        return cls(lead.claimed_at, call_sid)


@dataclass
class RunProgress:
    """How far a campaign run got."""

    run_id: str
    campaign: str
    source_file: str | None
    created_at: datetime
    total: int
    counts: dict[str, int]  # per state, every state present (0 when none)
    to_reconcile: list[int]  # lead row ids left `dialling` with no Sid (see the module doc)
    next_attempt_at: datetime | None  # earliest scheduled retry among pending leads
    state: str = "running"  # the run's: running, paused or cancelled
    outcomes: dict[str, int] = field(default_factory=dict)  # settled leads per last outcome (or status)

    @property
    def finished(self) -> bool:
        return not any(self.counts.get(state, 0) for state in ACTIVE_LEAD_STATES)


def _skip_pending(run_id: str) -> Any:
    return (update(CampaignLead)
            .where(CampaignLead.run_id == run_id, CampaignLead.state == "pending")
            .values(state="skipped", last_status="cancelled", next_attempt_at=None, updated_at=utcnow())
            .execution_options(synchronize_session=False))


def _lead_value(lead: Any, key: str) -> Any:
    return lead.get(key) if isinstance(lead, Mapping) else getattr(lead, key, None)


class CampaignRuns(Database):
    """The campaign-run queries of the store (`CallStore`)."""

    async def create_run(self, campaign: str, source_file: str | Path | None = None, run_id: str | None = None,
                         *, options: Mapping[str, Any] | None = None, account: str | None = None) -> CampaignRun:
        """A new run, `running`; `options` are what the job workers dial it with (bot/jobs)."""
        run = CampaignRun(
            id=run_id or uuid.uuid4().hex,
            campaign=campaign,
            source_file=str(source_file) if source_file is not None else None,
            created_at=utcnow(),
            state="running",
            options=jsonable(dict(options or {})),
            account=account,
        )
        async with self._write() as session:
            session.add(run)
        return run

    async def get_run(self, run_id: str) -> CampaignRun | None:
        async with self._read() as session:
            return await session.get(CampaignRun, run_id)

    async def add_leads(self, run_id: str, leads: Iterable[LeadInput | Mapping[str, Any]]) -> int:
        """Add leads as `pending`; ones already in the run (same lead_id) are left alone, so
        adding a file again is harmless. Phones must be E.164. Returns how many were added."""
        rows: dict[str, dict[str, Any]] = {}
        for lead in leads:
            line = _lead_value(lead, "line_number")
            lead_id = _lead_value(lead, "lead_id")
            phone = str(_lead_value(lead, "phone") or "").strip()
            if lead_id in (None, ""):
                raise ValueError(f"lead on line {line}: no lead_id")
            if not _E164.match(phone):
                raise ValueError(f"lead {lead_id!r} on line {line}: phone is not E.164 (+<country><number>)")
            rows.setdefault(
                str(lead_id),
                {
                    "run_id": run_id,
                    "line_number": int(line) if line is not None else 0,
                    "lead_id": str(lead_id),
                    "phone": phone,
                    "payload": jsonable(dict(_lead_value(lead, "payload") or {})),
                },
            )
        if not rows:
            return 0
        now = utcnow()
        added = 0
        keys = list(rows)
        for start in range(0, len(keys), ADD_LEADS_CHUNK):  # bounded statements (PostgreSQL: <= 32767 arguments)
            chunk = keys[start:start + ADD_LEADS_CHUNK]
            async with self._write() as session:
                existing = set((await session.execute(
                    select(CampaignLead.lead_id).where(CampaignLead.run_id == run_id, CampaignLead.lead_id.in_(chunk))
                )).scalars())
                new = [CampaignLead(**rows[key], state="pending", attempts=0, updated_at=now)
                       for key in chunk if key not in existing]
                session.add_all(new)
            added += len(new)
        return added

    async def get_lead(self, lead_row_id: int) -> CampaignLead | None:
        async with self._read() as session:
            return await session.get(CampaignLead, lead_row_id)

    async def list_leads(self, run_id: str, state: str | None = None) -> list[CampaignLead]:
        stmt = select(CampaignLead).where(CampaignLead.run_id == run_id)
        if state is not None:
            stmt = stmt.where(CampaignLead.state == state)
        async with self._read() as session:
            return list((await session.execute(stmt.order_by(CampaignLead.line_number, CampaignLead.id))).scalars())

    async def claim_next_lead(self, run_id: str, now: datetime | None = None) -> CampaignLead | None:
        """Atomically take the next due `pending` lead (file order) and make it `dialling`.

        Commit this BEFORE sending the REST request. `attempts` counts the claim. Due means
        `next_attempt_at` is unset or <= now. Two processes never get the same lead: the claim
        is `UPDATE ... WHERE id = :id AND state = 'pending'`, and a lost race tries the next one
        (PostgreSQL picks with FOR UPDATE SKIP LOCKED so claimers rarely collide; SQLite writes
        are serialized by BEGIN IMMEDIATE).
        Returns None when no lead is due (some may still be scheduled for later).
        """
        now = as_utc(now) or utcnow()
        due = and_(
            CampaignLead.run_id == run_id,
            CampaignLead.state == "pending",
            or_(CampaignLead.next_attempt_at.is_(None), CampaignLead.next_attempt_at <= now),
        )
        pick = select(CampaignLead.id).where(due).order_by(CampaignLead.line_number, CampaignLead.id).limit(1)
        if not self.is_sqlite:  # PostgreSQL: concurrent claimers pick different rows instead of racing
            pick = pick.with_for_update(skip_locked=True)
        while True:
            async with self._write() as session:
                candidate = (await session.execute(pick)).scalar_one_or_none()
                if candidate is None:
                    return None
                result = await session.execute(
                    update(CampaignLead)
                    .where(CampaignLead.id == candidate, CampaignLead.state == "pending")
                    .values(state="dialling", attempts=CampaignLead.attempts + 1, updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]  # an UPDATE's CursorResult
                    return await session.get(CampaignLead, candidate, populate_existing=True)
            # another process took it between our SELECT and UPDATE: look again

    async def _move_lead(self, lead_row_id: int, from_states: Sequence[str], values: dict[str, Any],
                         claim: LeadClaim | None = None) -> bool:
        """One conditional UPDATE; `claim`: only if the lead is still in that claim (its claim time
        and, once dialled, its call), so a late step of an earlier claim never moves a newer one."""
        conditions = [CampaignLead.id == lead_row_id, CampaignLead.state.in_(list(from_states))]
        if claim is not None:
            conditions.append(CampaignLead.claimed_at == as_utc(claim.claimed_at) if claim.claimed_at is not None
                              else CampaignLead.claimed_at.is_(None))
            if claim.call_sid is not None:
                conditions.append(CampaignLead.last_call_sid == claim.call_sid)
        async with self._write() as session:
            result = await session.execute(
                update(CampaignLead)
                .where(*conditions)
                .values(**values, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's CursorResult

    async def mark_lead_dialled(self, lead_row_id: int, call_sid: str, *, claim: LeadClaim | None = None) -> bool:
        """dialling -> in-call with the Sid Exotel gave. False if the lead was not `dialling`."""
        return await self._move_lead(
            lead_row_id, ("dialling",), {"state": "in-call", "last_call_sid": call_sid, "last_status": "initiated"},
            claim,
        )

    async def finish_lead(
        self,
        lead_row_id: int,
        state: str = "done",
        *,
        status: str | None = None,
        outcome: str | None = None,
        error: str | None = None,
        claim: LeadClaim | None = None,
    ) -> bool:
        """The lead is settled: `done`, `failed` or `skipped` (from any unsettled state).

        False if it was already settled (a repeated call changes nothing).
        """
        if state not in FINAL_LEAD_STATES:
            raise ValueError(f"finish_lead state must be one of {sorted(FINAL_LEAD_STATES)}, not {state!r}")
        values: dict[str, Any] = {"state": state, "next_attempt_at": None}
        for key, value in (("last_status", status), ("last_outcome", outcome), ("last_error", error)):
            if value is not None:
                values[key] = value
        return await self._move_lead(lead_row_id, tuple(ACTIVE_LEAD_STATES), values, claim)

    async def reschedule_lead(
        self,
        lead_row_id: int,
        at: datetime,
        *,
        status: str | None = None,
        outcome: str | None = None,
        error: str | None = None,
        not_an_attempt: bool = False,
        claim: LeadClaim | None = None,
    ) -> bool:
        """dialling / in-call -> pending, due again at `at` (a retry). False otherwise.

        `not_an_attempt`: the claim didn't dial (e.g. outside the calling window), so it
        doesn't count against the lead's attempts."""
        values: dict[str, Any] = {"state": "pending", "next_attempt_at": as_utc(at)}
        if not_an_attempt:
            values["attempts"] = CampaignLead.attempts - 1
        for key, value in (("last_status", status), ("last_outcome", outcome), ("last_error", error)):
            if value is not None:
                values[key] = value
        return await self._move_lead(lead_row_id, ("dialling", "in-call"), values, claim)

    async def leads_to_reconcile(self, run_id: str, claimed_before: datetime | None = None) -> list[CampaignLead]:
        """Leads left `dialling` with no Sid (see the resume rule in the module doc).

        `claimed_before` leaves out claims newer than that (a dialler may still be in its REST call).
        """
        stmt = select(CampaignLead).where(
            CampaignLead.run_id == run_id, CampaignLead.state == "dialling", CampaignLead.last_call_sid.is_(None)
        )
        if claimed_before is not None:
            stmt = stmt.where(CampaignLead.updated_at < as_utc(claimed_before))
        async with self._read() as session:
            return list((await session.execute(stmt.order_by(CampaignLead.line_number, CampaignLead.id))).scalars())

    async def run_progress(self, run_id: str) -> RunProgress | None:
        """Counts per state, leads to reconcile, the next retry; None for an unknown run."""
        progress = await self._progress([run_id])
        return progress[0] if progress else None

    async def unfinished_runs(self) -> list[RunProgress]:
        """Runs with a lead still pending, dialling or in-call, oldest first."""
        async with self._read() as session:
            run_ids = list(
                (
                    await session.execute(
                        select(CampaignLead.run_id)
                        .where(CampaignLead.state.in_(list(ACTIVE_LEAD_STATES)))
                        .distinct()
                    )
                ).scalars()
            )
        return await self._progress(run_ids) if run_ids else []

    async def _progress(self, run_ids: list[str]) -> list[RunProgress]:
        async with self._read() as session:
            runs = list(
                (
                    await session.execute(
                        select(CampaignRun).where(CampaignRun.id.in_(run_ids)).order_by(CampaignRun.created_at, CampaignRun.id)
                    )
                ).scalars()
            )
            counts = (
                await session.execute(
                    select(CampaignLead.run_id, CampaignLead.state, func.count())
                    .where(CampaignLead.run_id.in_(run_ids))
                    .group_by(CampaignLead.run_id, CampaignLead.state)
                )
            ).all()
            stale = (
                await session.execute(
                    select(CampaignLead.run_id, CampaignLead.id)
                    .where(
                        CampaignLead.run_id.in_(run_ids),
                        CampaignLead.state == "dialling",
                        CampaignLead.last_call_sid.is_(None),
                    )
                    .order_by(CampaignLead.line_number, CampaignLead.id)
                )
            ).all()
            settled_as = func.coalesce(CampaignLead.last_outcome, CampaignLead.last_status, CampaignLead.state)
            outcomes = (
                await session.execute(
                    select(CampaignLead.run_id, settled_as, func.count())
                    .where(CampaignLead.run_id.in_(run_ids), CampaignLead.state.in_(list(FINAL_LEAD_STATES)))
                    .group_by(CampaignLead.run_id, settled_as)
                )
            ).all()
            retries = (
                await session.execute(
                    select(CampaignLead.run_id, func.min(CampaignLead.next_attempt_at))
                    .where(CampaignLead.run_id.in_(run_ids), CampaignLead.state == "pending")
                    .group_by(CampaignLead.run_id)
                )
            ).all()
        result = []
        for run in runs:
            per_state = {state: 0 for state in LEAD_STATES}
            for rid, state, n in counts:
                if rid == run.id:
                    per_state[state] = int(n)
            next_at = next((at for rid, at in retries if rid == run.id), None)
            result.append(
                RunProgress(
                    run_id=run.id,
                    campaign=run.campaign,
                    source_file=run.source_file,
                    created_at=run.created_at,
                    total=sum(per_state.values()),
                    counts=per_state,
                    to_reconcile=[lead_id for rid, lead_id in stale if rid == run.id],
                    next_attempt_at=as_utc(next_at),
                    state=run.state,
                    outcomes={str(what): int(n) for rid, what, n in outcomes if rid == run.id},
                )
            )
        return result

    # --- what the job workers ask (bot/jobs) -------------------------------------------------

    async def set_run_state(self, run_id: str, state: str, from_states: Sequence[str]) -> bool:
        """Pause, resume or cancel: False if the run was not in one of `from_states`."""
        async with self._write() as session:
            result = await session.execute(
                update(CampaignRun).where(CampaignRun.id == run_id, CampaignRun.state.in_(list(from_states)))
                .values(state=state).execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE's CursorResult
                return False
            if state == "cancelled":  # nobody more is dialled; calls already live end as they end
                await session.execute(_skip_pending(run_id))
            return True

    async def skip_pending_leads(self, run_id: str) -> int:
        """A cancelled run's leads still pending are skipped (ones a dial in flight made due again)."""
        async with self._write() as session:
            return int((await session.execute(_skip_pending(run_id))).rowcount or 0)  # type: ignore[attr-defined]

    async def due_leads(self, run_id: str, now: datetime, limit: int) -> list[int]:
        """Row ids of up to `limit` pending leads due by `now`, in file order."""
        if limit <= 0:
            return []
        async with self._read() as session:
            return list((await session.execute(
                select(CampaignLead.id)
                .where(CampaignLead.run_id == run_id, CampaignLead.state == "pending",
                       or_(CampaignLead.next_attempt_at.is_(None), CampaignLead.next_attempt_at <= as_utc(now)))
                .order_by(CampaignLead.line_number, CampaignLead.id).limit(limit)
            )).scalars())

    async def live_lead_count(self, run_id: str) -> int:
        async with self._read() as session:
            return int((await session.execute(
                select(func.count()).where(CampaignLead.run_id == run_id, CampaignLead.state.in_(LIVE_LEAD_STATES))
            )).scalar_one())

    async def defer_pending_lead(self, lead_row_id: int, at: datetime, *, status: str | None = None) -> bool:
        """A pending lead is not due before `at` (its calling window opens then)."""
        values: dict[str, Any] = {"next_attempt_at": as_utc(at)}
        if status is not None:
            values["last_status"] = status
        return await self._move_lead(lead_row_id, ("pending",), values)

    async def lead_of_call(self, call_sid: str) -> CampaignLead | None:
        """The lead whose last dial placed this call, if it is still waiting for the call's end."""
        async with self._read() as session:
            return (await session.execute(
                select(CampaignLead).where(CampaignLead.last_call_sid == call_sid, CampaignLead.state == "in-call")
                .limit(1)
            )).scalar_one_or_none()

    async def runs_in_state(self, state: str) -> list[CampaignRun]:
        """Runs in `state` that still have a lead pending, dialling or in call."""
        async with self._read() as session:
            active = select(CampaignLead.run_id).where(CampaignLead.state.in_(list(ACTIVE_LEAD_STATES)))
            return list((await session.execute(
                select(CampaignRun).where(CampaignRun.state == state, CampaignRun.id.in_(active))
                .order_by(CampaignRun.created_at)
            )).scalars())

    async def leads_in_state(self, state: str, *, updated_before: datetime | None = None,
                             limit: int = 500) -> list[CampaignLead]:
        """Leads of any run in `state` (the sweep's view), oldest change first."""
        stmt = select(CampaignLead).where(CampaignLead.state == state)
        if updated_before is not None:
            stmt = stmt.where(CampaignLead.updated_at < as_utc(updated_before))
        async with self._read() as session:
            return list((await session.execute(stmt.order_by(CampaignLead.updated_at).limit(limit))).scalars())
