"""The three provider fakes (Deepgram, OpenAI, ElevenLabs) in a process of their own.

Run by bench/process_stack.py so the fakes' CPU is not charged to the server. Prints one JSON
line with the fakes' base URLs, then serves until SIGTERM/SIGINT; on SIGUSR1 it prints its
event-loop lag (a lagging fake would show up as latency the server did not add):

    python bench/fake_providers.py '{"stt_ms": 150, "llm_ms": 350, "tts_ms": 150, "ms_per_char": 30,
                                     "lines": [...], "reply": "..."}'
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config.logging_setup import setup_logging  # noqa: E402
from bot.server.loop_monitor import LoopLagMonitor  # noqa: E402
from testing.fakes.deepgram import FakeDeepgram  # noqa: E402
from testing.fakes.elevenlabs import FakeElevenLabs  # noqa: E402
from testing.fakes.openai_chat import FakeOpenAI, Reply  # noqa: E402


async def serve(config: dict) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    monitor = LoopLagMonitor(warn_ms=1e9)
    monitor.start()
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(json.dumps(monitor.summary()), flush=True))
    reply = config["reply"]
    async with (
        FakeDeepgram(config["lines"], api_key="test", latency_ms=config["stt_ms"]) as deepgram,
        FakeOpenAI(lambda body: Reply(text=reply), api_key="test", ttft_ms=config["llm_ms"]) as openai,
        FakeElevenLabs(api_key="test", ttfb_ms=config["tts_ms"], ms_per_char=config["ms_per_char"]) as elevenlabs,
    ):
        print(json.dumps({"deepgram": deepgram.base_url, "openai": openai.base_url,
                          "elevenlabs": elevenlabs.http_url}), flush=True)
        await stop.wait()


if __name__ == "__main__":
    setup_logging("WARNING")
    import uvloop  # the fakes stand in for remote providers: the faster loop (the server's) keeps them punctual

    uvloop.run(serve(json.loads(sys.argv[1])))
