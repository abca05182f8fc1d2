"""The embedded default: a complete outbound call on this machine, no accounts, no keys.

`bot run` without Exotel credentials (or with --simulate) dials a built-in Exotel simulator
instead of the REST API: the same REST client and dialler talk to a local fake of Exotel's
Calls API, which "answers" and opens `/media` exactly as Exotel's Voicebot applet does (same
JSON, 100 ms pacing, marks echoed at playback time, `clear` honoured) and posts the status
callbacks; the server runs in-process with the production code path. The caller speaks the
campaign's scenario (configs/<campaign>.scenario.yaml) with a local voice.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr

from bot.config.campaigns import Campaign
from bot.config.settings import Settings
from bot.exotel.applet import applet_url
from bot.server.local_server import LocalServer, free_port, serve_locally
from bot.server.services import services_of
from bot.simulator.exotel_rest import FakeExotelREST

SIM = {"exotel_account_sid": "simulated", "exotel_api_key": "simulated", "exotel_api_token": "simulated",
       "exotel_caller_id": "08000000000", "exotel_app_id": "1"}


@asynccontextmanager
async def simulated_exotel(settings: Settings, caller_events: list[Any], outcomes: Any = "answered"):
    """An in-process server wired to a simulated Exotel whose answered calls play `caller_events`
    (`outcomes`: answered, busy, no-answer or failed; one for all, or by number)."""
    async with FakeExotelREST(account_sid=SIM["exotel_account_sid"], api_key=SIM["exotel_api_key"],
                              api_token=SIM["exotel_api_token"], caller_script=lambda number: caller_events,
                              outcomes=outcomes,
                              ring_secs=0.5, emulator_options={"max_secs": 3600},
                              recording_urls=False) as exotel:
        port = free_port()
        sim_settings = settings.model_copy(update={
            **SIM, "exotel_api_token": SecretStr(SIM["exotel_api_token"]), "host": "127.0.0.1", "port": port,
            "public_base_url": f"http://127.0.0.1:{port}", "exotel_api_base_url": exotel.base_url,
        })
        async with serve_locally(sim_settings) as server:
            exotel.dynamic_url = applet_url(sim_settings, services_of(server.app).signing_key)
            yield server, exotel


def describe_stand_ins(server: LocalServer, campaign: Campaign | None = None) -> list[str]:
    """Which parts of this run are offline stand-ins, in plain words."""
    from pipelines.voices import effective_tts
    settings = server.settings
    parts = ["Exotel: built-in simulator (local fake of the Calls API + the Voicebot media socket)",
             "caller: simulated, speaking configs/<campaign>.scenario.yaml with Piper's bundled voice"]
    parts.append("speech-to-text: Deepgram" if settings.deepgram_api_key else
                 "speech-to-text: Whisper tiny.en, offline (bundled model; measured on the simulated caller's Piper voice at 8 kHz, not on real callers)")
    parts.append("agent: OpenAI" if settings.openai_api_key else
                 "agent: scripted stand-in (asks the campaign's questions, extracts answers)")
    voice = effective_tts(campaign, settings) if campaign else None
    if voice and voice.provider == "espeak":
        parts.append(f"voice: espeak-ng, offline ({voice.voice}; Roman-script Hinglish read as Hindi)")
    elif voice and voice.provider == "piper":
        parts.append(f"voice: Piper, offline ({voice.voice})")
    else:
        parts.append("voice: ElevenLabs" if settings.elevenlabs_api_key else "voice: Piper, offline (en_US-joe-medium)")
    return parts
