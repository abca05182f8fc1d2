"""Starting, pausing, resuming and cancelling campaign runs, and reading their progress.

Used by `bot run --leads` and by `POST /campaigns`. Everything a start needs is checked
before anything is stored: the options, the campaign, every row of the file (bad rows are
reported by line and left out). A start of the same file and campaign while an earlier run of
it is unfinished resumes that run instead (the leads already in it are left alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from procrastinate import App

from bot.config.campaigns import Campaign
from bot.dialing.campaign_options import CampaignOptions
from bot.dialing.lead_files import BadRow, read_leads
from bot.jobs.job_app import defer
from bot.jobs.task_names import WAKE_RUN
from bot.store import CallStore, LeadInput
from bot.store.runs import RunProgress


@dataclass
class StartedRun:
    run_id: str
    added: int
    resumed: bool
    bad_rows: list[BadRow] = field(default_factory=list)
    skipped_dnc: int = 0


class NoLeads(ValueError):
    """The file has no lead that can be dialled (every row bad or on the do-not-call list)."""


class Campaigns:
    """Campaign runs on the job engine, for one process (a CLI or a server node)."""

    def __init__(self, store: CallStore, app: App, account: str):
        self._store = store
        self._app = app
        self._account = account

    async def start(self, campaign: Campaign, leads_path: Path, options: CampaignOptions) -> StartedRun:
        """Read the file, then create (or resume) the run and wake it."""
        parsed = read_leads(leads_path, options.do_not_call, campaign.phones)
        return await self.start_leads(campaign, parsed, options, str(leads_path.resolve()))

    async def start_leads(self, campaign: Campaign, parsed: tuple[list[LeadInput], list[BadRow], int],
                          options: CampaignOptions, source: str, *, require_leads: bool = False) -> StartedRun:
        """Create (or resume) the run of `source` with leads already read, and wake it."""
        leads, bad, skipped = parsed
        if require_leads and not leads:
            raise NoLeads(f"no lead to dial: {len(bad)} bad row(s), {skipped} on the do-not-call list")
        for progress in await self._store.unfinished_runs():
            if progress.source_file == source and progress.campaign == campaign.name and progress.state != "cancelled":
                added = await self._store.add_leads(progress.run_id, leads)
                await self._store.set_run_state(progress.run_id, "running", ("paused",))
                await self.wake(progress.run_id)
                return StartedRun(progress.run_id, added, True, bad, skipped)
        run = await self._store.create_run(campaign.name, source, options=options.to_json(), account=self._account)
        added = await self._store.add_leads(run.id, leads)
        await self.wake(run.id)
        return StartedRun(run.id, added, False, bad, skipped)

    async def wake(self, run_id: str) -> None:
        await defer(self._app, WAKE_RUN, queueing_lock=f"wake-run-{run_id}", run_id=run_id)

    async def pause(self, run_id: str) -> bool:
        """No new dial starts (calls already live go on); False if the run was not running."""
        return await self._store.set_run_state(run_id, "paused", ("running",))

    async def resume(self, run_id: str) -> bool:
        """Dialling goes on where it stopped; False if the run was not paused."""
        if not await self._store.set_run_state(run_id, "running", ("paused",)):
            return False
        await self.wake(run_id)
        return True

    async def cancel(self, run_id: str) -> bool:
        """Leads not yet dialled are skipped and nothing is retried; False if already cancelled."""
        return await self._store.set_run_state(run_id, "cancelled", ("running", "paused"))

    async def progress(self, run_id: str) -> RunProgress | None:
        return await self._store.run_progress(run_id)
