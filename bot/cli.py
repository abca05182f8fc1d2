"""The `bot` command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from bot.campaigns import CampaignError
from bot.logging_setup import setup_logging
from bot.settings import PROJECT_ROOT, SettingsError, load_settings

app = typer.Typer(help="Exotel voice agent: dial leads and talk with them.", no_args_is_help=True)


def _settings(**overrides):
    try:
        return load_settings(**overrides)
    except SettingsError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve() -> None:
    """Run the server (same as `python server.py`)."""
    import uvicorn

    from bot.app import create_app

    settings = _settings()
    setup_logging(settings.log_level)
    try:
        web_app = create_app(settings)
    except CampaignError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(web_app, host=settings.host, port=settings.port, log_level="warning")


@app.command()
def demo(
    lead_name: str = typer.Option("Rahul", help="The lead's name, spoken in the greeting."),
) -> None:
    """One emulated Exotel call against the real server, offline: no accounts, no keys."""
    from bot.demo import run_demo
    from bot.local_server import free_port

    settings = _settings(port=free_port(), host="127.0.0.1")
    setup_logging(settings.log_level)
    result, wav = asyncio.run(run_demo(settings, lead_name, PROJECT_ROOT / "data" / "recordings"))
    typer.echo("")
    typer.echo("Offline stand-ins: Exotel is the built-in emulator; the voice is Piper (local).")
    typer.echo(f"greeting: first audio {result.first_media_after_start * 1000:.0f} ms after start"
               if result.first_media_after_start is not None else "greeting: no audio")
    typer.echo(f"bot audio heard: {result.played_secs:.1f} s in {len(result.payload_sizes)} media messages")
    typer.echo(f"barge-in: {len(result.clears_at)} clear(s); marks echoed: {len(result.marks_echoed)}")
    typer.echo(f"protocol violations: {len(result.violations)}; playback gaps: {len(result.gaps)}")
    typer.echo(f"what the caller heard: {wav}")
    if result.violations or result.connect_error:
        for line in result.violations or [result.connect_error]:
            typer.secho(f"  {line}", fg="red")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
