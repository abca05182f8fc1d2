"""`bot demo`: one emulated Exotel call against the real server, entirely on this machine.

The emulator speaks Exotel's protocol exactly as the Voicebot applet does, so the server
path is the production one. What the caller heard is saved as a WAV.
"""

from __future__ import annotations

import wave
from pathlib import Path

from bot.config.private_files import open_private, private_folder
from bot.config.settings import Settings
from bot.server.local_server import serve_locally
from bot.simulator.caller_speech import speak
from bot.simulator.exotel_emulator import EmulatorConfig, EmulatorResult, ExotelEmulator, HangUp, Say


async def run_demo(settings: Settings, lead_name: str, recordings: Path) -> tuple[EmulatorResult, Path]:
    """Place one emulated call: greeting, the caller barges in, then hangs up."""
    async with serve_locally(settings) as server:
        emulator = ExotelEmulator(
            EmulatorConfig(url=server.ws_url, custom_parameters={"name": lead_name})
        )
        caller_line = speak("Sorry, who is this?")
        result = await emulator.run([Say(at=5.0, pcm=caller_line), HangUp(at=8.0)])
    path = private_folder(recordings) / f"demo-{emulator.config.call_sid}.wav"
    with open_private(path) as out, wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(emulator.config.sample_rate)
        wav.writeframes(result.played_pcm())
    return result, path
