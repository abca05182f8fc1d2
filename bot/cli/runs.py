"""The bodies of `bot run` and `bot calls ...`: dial, follow, summarise (rich output)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bot.cli.services import cli_services
from bot.config.phone import mask_phone
from bot.config.settings import Settings
from bot.dialing.campaign_options import CampaignOptions, parse_window
from bot.dialing.lead_files import read_dnc
from bot.exotel.call_status import call_is_over
from bot.store.durable import is_outage
from bot.store.engine import mask_url
from bot.store.record_json import call_to_dict

console = Console()


@dataclass
class _Services:
    """What `_campaign` needs of the services, before any are started."""

    campaigns: Any
    settings: Settings


def _campaign(services, name_or_path: str | None):
    from bot.config.campaigns import load_campaign

    if name_or_path and name_or_path.endswith((".yaml", ".yml")):
        return load_campaign(Path(name_or_path))
    if name_or_path and name_or_path not in services.campaigns.names():
        raise ValueError(f"no campaign {name_or_path!r}; have {', '.join(services.campaigns.names())}")
    return services.campaigns.get(name_or_path, services.settings.default_campaign)


def _read_lead(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        lead = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(lead, dict):
        raise ValueError(f"{path}: a lead must be a JSON object")
    phone = lead.get("phone") or lead.get("to") or lead.get("number")
    if not phone:
        raise ValueError(f"{path}: the lead has no phone (or to/number) field")
    return str(phone), {k: v for k, v in lead.items() if k not in ("to", "number")}


async def run_one_lead(settings: Settings, lead_path: Path, campaign_name: str | None,
                       simulate: bool | None = None) -> int:
    """Dial one lead, print the call live (status, transcript), then the outcome.

    Without Exotel credentials (or with `simulate`), the call goes to the built-in simulator."""
    from bot.config.campaigns import CampaignBook

    phone, lead = _read_lead(lead_path)
    book = CampaignBook(settings.campaigns_dir)
    campaign_name = campaign_name or lead.get("campaign")
    # a bad number or campaign fails here, before a server or a dial
    campaign = _campaign(_Services(book, settings), campaign_name)
    campaign.phones.normalize(phone)
    if simulate or (simulate is None and not settings.exotel_configured):
        return await simulate_one_lead(settings, phone, lead, campaign_name)
    async with cli_services(settings, dialling=True) as services:
        result = await services.dialer.dial(phone, campaign, lead)
        console.print(f"[bold]calling[/] {mask_phone(result.to)} for [cyan]{campaign.name}[/]  sid {result.call_sid}")
        record = await follow_call(services.store, result.call_sid)
    print_outcome(record)
    return 0 if record and record["status"] == "completed" else 1


@contextlib.asynccontextmanager
async def simulation(settings: Settings, campaign_name: str | None, what: str, outcomes: Any = "answered"):
    """The campaign and an in-process server on the built-in Exotel simulator, whose answered
    calls play the campaign's scenario (beside the YAML when the campaign is given as a path);
    waits for the simulator's last callbacks on the way out."""
    from bot.config.campaigns import CampaignBook
    from bot.simulator.scenario import load_scenario, scenario_for
    from bot.simulator.simulated_exotel import describe_stand_ins, simulated_exotel
    from bot.store.database_check import check_database

    book = CampaignBook(settings.campaigns_dir)
    campaign = _campaign(_Services(book, settings), campaign_name)
    is_path = isinstance(campaign_name, str) and campaign_name.endswith((".yaml", ".yml"))
    scenario = load_scenario(scenario_for(settings.campaigns_dir, str(campaign_name) if is_path else campaign.name))
    await check_database(settings.store_url)  # else the in-process server fails mid-start-up
    console.print(f"[bold]No Exotel credentials: simulating {what} on this machine.[/]")
    events = scenario.caller_events(settings.exotel_sample_rate or 8000)
    async with simulated_exotel(settings, events, outcomes=outcomes) as (server, exotel):
        for part in describe_stand_ins(server, campaign):
            console.print(f"  {part}")
        yield server, campaign
        await exotel.drain()


async def simulate_one_lead(settings: Settings, phone: str, lead: dict[str, Any], campaign_name: str | None) -> int:
    """The same call, placed through the built-in Exotel simulator with a simulated caller."""
    from bot.server.services import services_of

    async with simulation(settings, campaign_name or lead.get("campaign"), "the call") as (server, campaign):
        services = services_of(server.app)
        assert services.dialer is not None  # the simulator's credentials are set
        result = await services.dialer.dial(phone, campaign, lead)
        console.print(f"[bold]calling[/] {mask_phone(result.to)} for [cyan]{campaign.name}[/]  sid {result.call_sid}")
        record = await follow_call(services.store, result.call_sid)
    print_outcome(record)
    if record and record.get("recording"):
        console.print(f"recording (caller left, bot right): {record['recording'].get('path')}")
    console.print(f"call record: {mask_url(str(settings.database_url))}  (bot calls show {result.call_sid})")
    return 0 if record and record["status"] == "completed" else 1


async def follow_call(store, call_sid: str, timeout: float = 3600.0, poll: float = 0.5) -> dict[str, Any] | None:
    """Print status changes and transcript lines as they land in the store; the final record."""
    shown, status, record = 0, None, None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            row = await store.find_call(call_sid)
        except Exception as error:  # an outage: the record is journalled and lands when it ends
            if not is_outage(error):
                raise
            row = None
        if row is not None:
            record = call_to_dict(row)
            if record["status"] != status:
                status = record["status"]
                console.print(f"  status: [yellow]{status}[/]")
            for entry in record["transcript"][shown:]:
                who = "[green]bot[/]   " if entry["role"] == "assistant" else "[blue]caller[/]"
                console.print(f"  {entry.get('t') or 0:6.1f}s {who} {entry['text']}")
            shown = len(record["transcript"])
            if call_is_over(status, record["ended_at"], record["end_reason"]):
                return record
        await asyncio.sleep(poll)
    return record


def print_outcome(record: dict[str, Any] | None) -> None:
    if record is None:
        console.print("[red]no record of the call[/]")
        return
    table = Table(show_header=False, box=None)
    for key in ("status", "outcome", "summary", "end_reason", "duration_secs"):
        table.add_row(key, str(record.get(key)))
    table.add_row("collected", json.dumps(record["collected"], ensure_ascii=False))
    if record.get("recording"):
        table.add_row("recording", str(record["recording"].get("path") or record["recording"].get("url")))
    v2v = [t["voice_to_voice"] for t in record.get("turns") or [] if "voice_to_voice" in t]
    if v2v:
        table.add_row("voice-to-voice", ", ".join(f"{value * 1000:.0f} ms" for value in v2v))
    console.print(table)


async def run_campaign(settings: Settings, leads_path: Path, campaign_name: str | None, *, concurrency: int,
                       calls_per_minute: int, window: str | None, timezone: str, max_attempts: int,
                       retry_delay: float, dnc: Path | None, simulate: bool | None = None,
                       worker: bool = True) -> int:
    """Enqueue (or resume) the run on the job engine, follow it with a progress bar, print the
    summary. Without Exotel credentials (or with `simulate`), the calls go to the built-in
    simulator, at any hour unless a `window` is given (real calls: 10:00-19:00 by default).
    `worker`: this process runs a job worker too (on SQLite it is the only one)."""
    simulated = bool(simulate or (simulate is None and not settings.exotel_configured))
    start, end = parse_window(window or ("00:00-23:59:59" if simulated else "10:00-19:00"))
    options = CampaignOptions(concurrency=concurrency, calls_per_minute=calls_per_minute, window_start=start,
                              window_end=end, timezone=timezone, max_attempts=max_attempts,
                              retry_delay_secs=retry_delay, do_not_call=read_dnc(dnc))
    if simulated:
        return await simulate_campaign(settings, leads_path, campaign_name, options)
    from bot.jobs.job_app import uses_postgres

    if not worker and not uses_postgres(settings):
        raise ValueError("--no-worker needs DATABASE_URL on PostgreSQL (on SQLite this process is the only worker)")
    async with cli_services(settings, dialling=True) as services:
        campaign = _campaign(services, campaign_name)
        return await drive_run(settings, services.store, services.dialer, services.exotel, campaign, options,
                               leads_path, worker=worker)


async def simulate_campaign(settings: Settings, leads_path: Path, campaign_name: str | None,
                            options: CampaignOptions) -> int:
    """The same run through the built-in Exotel simulator: answered calls play the campaign's
    scenario; a lead's `simulate` column (busy, no-answer, failed) makes its calls end so."""
    from bot.server.services import services_of

    outcomes = simulated_outcomes(leads_path)
    async with simulation(settings, campaign_name, "the campaign's calls", outcomes) as (server, campaign):
        services = services_of(server.app)
        return await drive_run(server.settings, services.store, services.dialer, services.exotel, campaign,
                               options, leads_path)


def simulated_outcomes(leads_path: Path) -> dict[str, str]:
    """{phone: busy|no-answer|failed} from the CSV's `simulate` column (others are answered)."""
    import csv

    from bot.dialing.lead_files import PHONE_COLUMNS
    from bot.simulator.exotel_rest import OUTCOMES

    outcomes = {"*": "answered"}
    with leads_path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            wanted = (row.get("simulate") or "").strip().lower()
            phone = next((row[c] for c in PHONE_COLUMNS if row.get(c)), None)
            if phone and wanted in OUTCOMES:
                outcomes[phone] = wanted
    return outcomes


async def drive_run(settings: Settings, store, dialer, exotel, campaign, options: CampaignOptions,
                    leads_path: Path, *, worker: bool = True) -> int:
    """Start (or resume) the run of `leads_path` on the job engine, follow it with a progress
    bar until every lead is settled, print the summary."""
    from bot.jobs.campaigns import Campaigns
    from bot.jobs.worker import campaign_worker

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "dial_error":
            console.print(f"  line {data['line']}: {data['error']}")

    async with contextlib.AsyncExitStack() as stack:
        if worker:
            work = await stack.enter_async_context(campaign_worker(settings, store, dialer, exotel, on_event=on_event,
                                                                   campaigns={campaign.name: campaign}))
            app = work.app
        else:
            app = await stack.enter_async_context(_enqueue_only_app(settings))
        campaigns = Campaigns(store, app, str(settings.exotel_account_sid or "simulated"))
        report = await campaigns.start(campaign, leads_path, options)
        for bad in report.bad_rows:
            console.print(f"[red]line {bad.line}[/]: {bad.reason} (skipped)")
        if report.skipped_dnc:
            console.print(f"{report.skipped_dnc} lead(s) on the do-not-call list (skipped)")
        verb = "resuming" if report.resumed else "starting"
        console.print(f"{verb} run {report.run_id} of [cyan]{campaign.name}[/]")
        counts = await follow_run(store, report.run_id, campaign.name)
    await print_run_summary(store, report.run_id, counts)
    failure = nothing_succeeded(counts, len(report.bad_rows))
    if failure:
        console.print(f"[red]{failure}[/]")
        return 1
    return 0


@contextlib.asynccontextmanager
async def _enqueue_only_app(settings: Settings):
    """The job app without a worker: the campaign is left to the `bot worker` processes."""
    from bot.jobs.job_app import ensure_job_schema, postgres_job_app

    await ensure_job_schema(settings)
    app = postgres_job_app(settings, pool_size=1)
    async with app.open_async():
        yield app


async def follow_run(store, run_id: str, title: str, poll_secs: float = 1.0) -> dict[str, int]:
    """A progress bar over the run's leads until none is pending, dialling or in call."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console)
    with progress:
        bar = progress.add_task(title, total=None, note="")
        while True:
            try:
                now = await store.run_progress(run_id)
            except Exception as error:  # the run pauses through an outage; so does the bar
                if not is_outage(error):
                    raise
                progress.update(bar, note="database unavailable: waiting")
            else:
                finished = now.counts.get("done", 0) + now.counts.get("failed", 0) + now.counts.get("skipped", 0)
                note = f"in call {now.counts.get('in-call', 0)}, pending {now.counts.get('pending', 0)}"
                if now.state != "running":
                    note += f" ({now.state})"
                progress.update(bar, total=now.total, completed=finished, note=note)
                if now.finished:
                    return now.counts
            await asyncio.sleep(poll_secs)


def nothing_succeeded(counts: dict[str, int], bad_rows: int) -> str | None:
    """The summary's last line when no lead got through but some were tried or refused, so a
    script running the campaign sees it fail (exit 1); None when something succeeded, or when
    there was nothing to call (every lead on the do-not-call list)."""
    failed = counts.get("failed", 0)
    if counts.get("done", 0) or not (failed or bad_rows):
        return None
    return f"nothing succeeded: {failed} lead(s) failed, {bad_rows} bad row(s)"


async def print_run_summary(store, run_id: str, counts: dict[str, int]) -> None:
    table = Table(title="campaign summary")
    table.add_column("line", justify="right")
    table.add_column("lead")
    table.add_column("state")
    table.add_column("attempts", justify="right")
    table.add_column("last status")
    table.add_column("outcome")
    for lead in await store.list_leads(run_id):
        table.add_row(str(lead.line_number), str(lead.payload.get("name") or lead.lead_id), lead.state,
                      str(lead.attempts), lead.last_status or "", lead.last_outcome or "")
    console.print(table)
    console.print("  ".join(f"{state}: {count}" for state, count in counts.items() if count))


async def list_calls(settings: Settings, **filters: Any) -> None:
    async with cli_services(settings, dialling=False) as services:
        rows = [call_to_dict(r) for r in await services.store.list_calls(**filters)]
    table = Table()
    table.add_column("call_sid", no_wrap=True, min_width=32)  # whole: `bot calls show` takes any unique prefix
    for column in ("lead", "phone", "campaign", "status", "outcome", "started_at", "duration_secs"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["call_sid"], str(row["lead"].get("name") or ""), mask_phone(row.get("to_number")) or "",
                      *(str(row.get(c) or "") for c in ("campaign", "status", "outcome", "started_at",
                                                        "duration_secs")))
    console.print(table)


async def show_call(settings: Settings, call_sid: str) -> int:
    async with cli_services(settings, dialling=False) as services:
        row = await services.store.find_call(call_sid)
        if row is None:
            matches = await services.store.find_calls_by_prefix(call_sid) if call_sid else []
            if len(matches) != 1:
                why = "more than one call starts with" if matches else "no call"
                console.print(f"[red]{why} {call_sid!r}[/]", highlight=False)
                return 1
            row = matches[0]
        print(json.dumps(call_to_dict(row), indent=2, ensure_ascii=False))
    return 0


async def export_calls(settings: Settings, *, as_csv: bool, campaign: str | None, limit: int) -> None:
    from bot.store.record_csv import calls_csv

    async with cli_services(settings, dialling=False) as services:
        rows = [call_to_dict(r) for r in await services.store.list_calls(campaign=campaign, limit=limit)]
    sys.stdout.write(calls_csv(rows) if as_csv else json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
