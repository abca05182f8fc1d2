"""A full agent on loopback: the real server with Deepgram, OpenAI and ElevenLabs fakes.

The real SDK clients inside Pipecat's services talk to the fakes through the base-URL
settings; the Exotel emulator plays the caller. Shared by the conversation tests and the
latency benchmark.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.config.settings import PROJECT_ROOT, load_settings
from bot.server.local_server import LocalServer, free_port, serve_locally
from bot.simulator.exotel_emulator import EmulatorConfig, ExotelEmulator
from testing.fakes.deepgram import FakeDeepgram
from testing.fakes.elevenlabs import FakeElevenLabs
from testing.fakes.openai_chat import FakeOpenAI


@dataclass
class AgentStack:
    server: LocalServer
    deepgram: FakeDeepgram
    openai: FakeOpenAI
    elevenlabs: FakeElevenLabs

    def emulator(self, **overrides: Any) -> ExotelEmulator:
        overrides.setdefault("custom_parameters", {"name": "Rahul", "campaign": "real_estate"})
        return ExotelEmulator(EmulatorConfig(url=overrides.pop("url", self.server.ws_url), **overrides))

    def finished(self, call_sid: str):
        return self.server.app.state.services.call_sink.get(call_sid)


def write_campaigns(folder: Path, tweaks: dict[str, dict[str, Any]] | None = None) -> Path:
    """Copy the shipped campaigns into `folder`, with per-campaign overrides (deep-merged)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (PROJECT_ROOT / "configs").glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    for name, tweak in (tweaks or {}).items():
        base_name = tweak.pop("_base", name)
        data = yaml.safe_load((folder / f"{base_name}.yaml").read_text())
        _deep_merge(data, tweak)
        data["name"] = name
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    return folder


def _deep_merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


@asynccontextmanager
async def agent_stack(
    tmp_path: Path,
    *,
    stt_script: list[str] | Callable[..., str] | None = None,
    llm: Any = None,
    campaign_tweaks: dict[str, dict[str, Any]] | None = None,
    deepgram_kwargs: dict[str, Any] | None = None,
    openai_kwargs: dict[str, Any] | None = None,
    elevenlabs_kwargs: dict[str, Any] | None = None,
    **settings_overrides: Any,
) -> AsyncIterator[AgentStack]:
    """Start the three fakes and the real server pointed at them."""
    async with AsyncExitStack() as stack:
        deepgram = await stack.enter_async_context(
            FakeDeepgram(stt_script, api_key="test", **(deepgram_kwargs or {}))
        )
        openai = await stack.enter_async_context(FakeOpenAI(llm, api_key="test", **(openai_kwargs or {})))
        elevenlabs = await stack.enter_async_context(
            FakeElevenLabs(api_key="test", **(elevenlabs_kwargs or {}))
        )
        settings = load_settings(**{
            "_env_file": None,
            "host": "127.0.0.1",
            "port": free_port(),
            "deepgram_api_key": "test",
            "deepgram_base_url": deepgram.base_url,
            "openai_api_key": "test",
            "openai_base_url": openai.base_url,
            "elevenlabs_api_key": "test",
            "elevenlabs_base_url": elevenlabs.http_url,
            "campaigns_dir": write_campaigns(tmp_path / "configs", campaign_tweaks),
            "data_dir": tmp_path / "data",
            **settings_overrides,  # e.g. a provider's base URL pointed somewhere else
        })
        server = await stack.enter_async_context(serve_locally(settings))
        yield AgentStack(server, deepgram, openai, elevenlabs)
