"""The `bot` command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from bot.config.campaigns import CampaignError
from bot.config.logging_setup import setup_logging
from bot.config.settings import PROJECT_ROOT, SettingsError, load_settings

# Plain (click) help and usage errors: typer's rich panels print `--simulate <bool>` for flags
# (and `--help <bool>`), and box a usage error over several lines.
PLAIN = None
app = typer.Typer(help="Exotel voice agent: dial leads and talk with them.", no_args_is_help=True,
                  rich_markup_mode=PLAIN)


# The command line logs at INFO (DEBUG with --verbose); `bot run`, which prints the live
# transcript, only errors (a stalled-loop warning in the middle of a call's lines reads as noise).
VERBOSE = {"on": False}


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG on stderr.")) -> None:
    VERBOSE["on"] = verbose
    setup_logging("DEBUG" if verbose else "INFO")


def _quiet_logging(level: str = "ERROR") -> None:
    """Logs for a command with live output: `level` on stderr unless --verbose."""
    setup_logging("DEBUG" if VERBOSE["on"] else level)


def _settings(**overrides):
    try:
        return load_settings(**overrides)
    except SettingsError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from None


def _fail(error: Exception | str) -> typer.Exit:
    """One red line on stderr; the command exits 2."""
    typer.secho(f"error: {error}", fg="red", err=True)
    return typer.Exit(2)


def _need_file(path: Path | None, what: str) -> None:
    """Refuse a missing input file up front in one line naming it (not `[Errno 2] ...`)."""
    if path is not None and not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "not found"
        raise _fail(f"{what} file {problem}: {path}")


def _run(coroutine):
    """asyncio.run, with a database that can't be opened told in one line."""
    from bot.store.database_check import DatabaseUnavailable

    try:
        return asyncio.run(coroutine)
    except DatabaseUnavailable as error:
        raise _fail(error) from None


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Interface to listen on (overrides HOST)."),
    port: int | None = typer.Option(None, help="Port to listen on (overrides PORT)."),
    workers: int | None = typer.Option(None, help="Server processes; 0 = two per CPU core (overrides WORKERS)."),
) -> None:
    """Run the server (same as `python server.py`; WORKERS processes)."""
    from bot.server.workers import WorkerStartupFailed, run_server
    from bot.store.database_check import DatabaseUnavailable

    given = {"host": host, "port": port, "workers": workers}
    settings = _settings(**{name: value for name, value in given.items() if value is not None})
    setup_logging(settings.log_level)
    try:
        run_server(settings)  # a bad campaign file or database fails here, before anything listens
    except (CampaignError, DatabaseUnavailable, WorkerStartupFailed) as error:
        raise _fail(error) from None


@app.command()
def demo(
    lead_name: str = typer.Option("Rahul", help="The lead's name, spoken in the greeting."),
) -> None:
    """One emulated Exotel call against the real server, offline: no accounts, no keys."""
    from bot.store.database_check import check_database

    settings = _settings()
    setup_logging(settings.log_level)
    _run(check_database(settings.database_url))
    from bot.cli.demo import run_demo
    from bot.server.local_server import free_port

    settings = _settings(port=free_port(), host="127.0.0.1")
    try:
        result, wav = asyncio.run(run_demo(settings, lead_name, PROJECT_ROOT / "data" / "recordings"))
    except CampaignError as error:  # e.g. the offline engines it speaks with are not installed
        raise _fail(error) from None
    typer.echo("")
    typer.echo("Offline stand-ins: Exotel is the built-in emulator; the voice is Piper (local).")
    typer.echo(f"greeting: first audio {result.first_media_after_start * 1000:.0f} ms after start"
               if result.first_media_after_start is not None else "greeting: no audio")
    typer.echo(f"bot audio heard: {result.played_secs:.1f} s in {len(result.payload_sizes)} media messages")
    typer.echo(f"barge-in: {len(result.clears_at)} clear(s); marks echoed: {len(result.marks_echoed)}")
    typer.echo(f"protocol violations: {len(result.violations)}; playback gaps: {len(result.gaps)}")
    typer.echo(f"what the caller heard: {wav}")
    if result.violations or result.connect_error:
        for line in result.violations or [result.connect_error or ""]:
            typer.secho(f"  {line}", fg="red")
        raise typer.Exit(1)


calls_app = typer.Typer(help="Read call records (from the shared database).", no_args_is_help=True,
                        rich_markup_mode=PLAIN)
app.add_typer(calls_app, name="calls")
campaigns_app = typer.Typer(help="The campaigns in CAMPAIGNS_DIR, and checking a campaign file.",
                            no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(campaigns_app, name="campaigns")


@campaigns_app.command("list")
def campaigns_list() -> None:
    """The campaigns the server would load (a bad file: one line, exit 2)."""
    from bot.config.campaigns import CampaignBook

    settings = _settings()
    try:
        book = CampaignBook(settings.campaigns_dir)
    except CampaignError as error:
        raise _fail(error) from None
    for campaign in book.all():
        typer.echo(f"{campaign.name}\t{campaign.language}\t{campaign.agent_name} ({campaign.company})")


@campaigns_app.command("check")
def campaigns_check(path: Path = typer.Argument(..., help="A campaign YAML file.")) -> None:
    """Validate a campaign file; print what the agent says first and which details it collects."""
    from bot.config.campaigns import load_campaign
    from bot.simulator.scenario import ScenarioError, load_scenario, scenario_for

    _need_file(path, "campaign")
    try:
        campaign = load_campaign(path)
    except CampaignError as error:
        raise _fail(error) from None
    typer.echo(f"ok: {campaign.name} ({campaign.language}, {campaign.stt.provider} / {campaign.llm.provider} / "
               f"{campaign.tts.provider})")
    typer.echo(f"says first (lead named Rahul): {campaign.render_greeting({'name': 'Rahul'})}")
    fields = ", ".join(f"{f.name} ({f.type})" for f in campaign.lead_fields) or "none"
    typer.echo(f"collects: {fields}")
    typer.echo(f"outcomes: {', '.join(campaign.outcomes)}")
    try:
        scenario = load_scenario(scenario_for(path.parent, str(path)))
        typer.echo(f"simulated caller: {len(scenario.lines)} line(s) in {path.stem}.scenario.yaml")
    except ScenarioError:
        typer.echo(f"simulated caller: none ({path.stem}.scenario.yaml beside it is needed for --simulate)")


@app.command()
def run(
    lead: Path | None = typer.Option(None, "--lead", help="A JSON file with one lead: {phone|to, name, id, ...}."),
    leads: Path | None = typer.Option(None, "--leads", help="A CSV of leads (a phone column; id, name, timezone, ...)."),
    campaign: str | None = typer.Option(None, "--campaign", help="Campaign name or YAML path."),
    concurrency: int = typer.Option(5, help="Calls at once (campaign runs)."),
    calls_per_minute: int = typer.Option(60, help="Dialling rate limit (Exotel allows 200/min)."),
    window: str | None = typer.Option(None, help="Calling window in the lead's time zone (default 10:00-19:00; "
                                      "simulated runs: any time)."),
    timezone: str = typer.Option("Asia/Kolkata", help="Time zone for leads without one."),
    max_attempts: int = typer.Option(3, help="Tries per lead for busy/no-answer/failed."),
    retry_delay: float = typer.Option(1800, help="Seconds before retrying a lead."),
    dnc: Path | None = typer.Option(None, "--dnc", help="Do-not-call list: one number per line."),
    simulate: bool = typer.Option(False, "--simulate", help="Use the built-in Exotel simulator even with credentials."),
    worker: bool = typer.Option(True, "--worker/--no-worker",
                                help="Run a job worker in this process too (--no-worker: PostgreSQL only, the "
                                "`bot worker` processes dial)."),
) -> None:
    """Dial one lead (--lead) and follow the call, or run a campaign (--leads) on the job engine."""
    if (lead is None) == (leads is None):
        typer.secho("error: give exactly one of --lead or --leads", fg="red", err=True)
        raise typer.Exit(2)
    _need_file(lead or leads, "lead")
    _need_file(dnc, "do-not-call")
    if campaign and campaign.endswith((".yaml", ".yml")):
        _need_file(Path(campaign), "campaign")
    settings = _settings()
    _quiet_logging()
    from bot.cli.runs import run_campaign, run_one_lead
    from bot.config.phone import InvalidPhoneNumber
    from bot.store.database_check import DatabaseUnavailable

    try:
        if lead is not None:
            code = asyncio.run(run_one_lead(settings, lead, campaign, simulate=simulate or None))
        elif leads is not None:
            code = asyncio.run(run_campaign(settings, leads, campaign, concurrency=concurrency,
                                            calls_per_minute=calls_per_minute, window=window,
                                            timezone=timezone, max_attempts=max_attempts,
                                            retry_delay=retry_delay, dnc=dnc, simulate=simulate or None,
                                            worker=worker))
    except InvalidPhoneNumber as error:  # the user's own typing: shown as typed
        raise _fail(error.for_user) from None
    except (SettingsError, CampaignError, DatabaseUnavailable, ValueError) as error:
        raise _fail(error) from None  # incl. ScenarioError
    except OSError as error:  # a file unreadable after the checks above: name it, not the errno
        if error.filename is None:
            raise  # a network error is not a file problem
        raise _fail(f"cannot read {error.filename}: {error.strerror or error}") from None
    except KeyboardInterrupt:
        typer.echo("stopped; run the same command again to resume without calling anyone twice")
        raise typer.Exit(130) from None
    raise typer.Exit(code)


@app.command("worker")
def worker_command(
    concurrency: int | None = typer.Option(None, help="Jobs at once (overrides JOB_WORKER_CONCURRENCY)."),
) -> None:
    """Run a campaign job worker: dials the leads of every running campaign, with the others
    (any number, on any machines; DATABASE_URL on PostgreSQL). Stops cleanly on Ctrl-C / SIGTERM."""
    overrides = {"job_worker_concurrency": concurrency} if concurrency is not None else {}
    settings = _settings(**overrides)
    from bot.cli.worker import run_worker
    from bot.store.database_check import DatabaseUnavailable

    try:
        code = asyncio.run(run_worker(settings))
    except (SettingsError, DatabaseUnavailable, ValueError) as error:
        raise _fail(error) from None
    raise typer.Exit(code)


@calls_app.command("list")
def calls_list(campaign: str | None = None, status: str | None = None, outcome: str | None = None,
               limit: int = 50) -> None:
    """The latest calls."""
    from bot.cli.runs import list_calls

    _run(list_calls(_settings(), campaign=campaign, status=status, outcome=outcome, limit=limit))


@calls_app.command("show")
def calls_show(call_sid: str) -> None:
    """One call's record (transcript, outcome, details) as JSON."""
    from bot.cli.runs import show_call

    raise typer.Exit(_run(show_call(_settings(), call_sid)))


@calls_app.command("export")
def calls_export(csv_out: bool = typer.Option(True, "--csv/--json"), campaign: str | None = None,
                 limit: int = 1000) -> None:
    """Export records to stdout (CSV by default)."""
    from bot.cli.runs import export_calls

    _run(export_calls(_settings(), as_csv=csv_out, campaign=campaign, limit=limit))


@app.command("applet-url")
def applet_url_command() -> None:
    """The signed dynamic URL to paste into Exotel's Voicebot applet."""
    from bot.exotel.applet import applet_url
    from bot.exotel.signing import signing_key

    settings = _settings()
    if _on_this_machine(settings.public_base_url):
        typer.secho(f"warning: PUBLIC_BASE_URL is {settings.public_base_url} (the default when unset): Exotel "
                    "cannot reach this machine there; set it to the server's public https address",
                    fg="yellow", err=True)
    typer.echo(applet_url(settings, signing_key(settings)))


def _on_this_machine(url: str) -> bool:
    """A base URL only this machine can open (localhost, 127.x, ::1, 0.0.0.0): a URL built on it
    looks right when pasted into Exotel and never connects, so it gets a warning."""
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


if __name__ == "__main__":
    app()
