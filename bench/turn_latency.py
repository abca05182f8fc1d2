"""Voice-to-voice latency of full calls against the loopback fakes, at fixed provider latencies.

    .venv/bin/python bench/turn_latency.py [--calls 4] [--turns 4]

Two views of every caller turn:

- caller's view (the emulated Exotel): from when it sent the audio holding the end of the
  caller's speech (last sample above an amplitude threshold) to the first bot media it got;
- server's view: from the end of speech as Silero VAD judged it (its stop event minus
  stop_secs) to the first bot audio sent.

They differ by where the VAD decides speech ended (the same utterance always gives the same
difference, +-100 ms between utterances), not by queueing. The floor any agent has with
these settings is

    turn policy: max(VAD stop + speech timeout, VAD stop + STT latency)
    + LLM time to first token + TTS time to first byte

and "added" (server's view minus the floor) is what this project adds on top of the
providers and the turn policy. Target: added p95 <= 60 ms at one call.
Prints a table and writes bench/results/turn_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measures import percentile, reply_latencies, speech_end_offset  # noqa: E402
from bot.exotel_emulator import HangUp, Say  # noqa: E402
from bot.fakes.openai_chat import Reply  # noqa: E402
from bot.logging_setup import setup_logging  # noqa: E402
from bot.speech_synth import speak  # noqa: E402
from tests.agent_stack import agent_stack  # noqa: E402

LINES = ["Yes I can talk now", "My budget is about eighty lakhs", "I want a two bedroom flat",
         "Maybe in three months", "Weekends are better for me", "Thank you"]
REPLY = "Okay, noted. Could you tell me a little more?"
SCENARIOS = {
    "providers_0ms": {"stt_ms": 0, "llm_ms": 0, "tts_ms": 0},
    "providers_realistic": {"stt_ms": 150, "llm_ms": 350, "tts_ms": 150},
    # Pipecat's default turn detection (smart-turn, 3 s stop time), for comparison.
    "smart_turn_default": {"stt_ms": 150, "llm_ms": 350, "tts_ms": 150, "smart_turn_stop_secs": 3.0},
}
TURN_GAP_SECS = 6.0  # room for each reply (even a slow turn decision) before the next line


async def run_scenario(name: str, latencies: dict[str, int], calls: int, turns: int, verbose: bool = False) -> dict:
    vad_stop, speech_timeout = 0.2, 0.3  # the real_estate campaign's turn-taking settings
    smart = latencies.get("smart_turn_stop_secs")
    turn_wait = vad_stop if smart else max(vad_stop + speech_timeout, vad_stop + latencies["stt_ms"] / 1000)
    floor = turn_wait + latencies["llm_ms"] / 1000 + latencies["tts_ms"] / 1000
    turn_taking = {"vad": {"stop_secs": vad_stop}, "user_speech_timeout_secs": speech_timeout}
    if smart:
        turn_taking.update(stop_strategy="smart_turn", smart_turn_stop_secs=smart)
    tweaks = {"real_estate": {"greeting": "Hello {lead.name}, this is Priya. Got a minute?",
                              "fillers": {"enabled": False}, "turn_taking": turn_taking}}
    pcms = [speak(line) for line in LINES[:turns]]
    v2v: list[float] = []
    server_v2v: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with agent_stack(
            Path(tmp), stt_script=LINES, llm=lambda body: Reply(text=REPLY), campaign_tweaks=tweaks,
            deepgram_kwargs={"latency_ms": latencies["stt_ms"]},
            openai_kwargs={"ttft_ms": latencies["llm_ms"]},
            elevenlabs_kwargs={"ttfb_ms": latencies["tts_ms"], "ms_per_char": 30},
        ) as stack:
            for _ in range(calls):
                emu = stack.emulator()
                script, ends = [], []
                at = 3.0
                for pcm in pcms:
                    script.append(Say(at=at, pcm=pcm))
                    ends.append(at + speech_end_offset(pcm))
                    at += len(pcm) / 16000 + TURN_GAP_SECS
                script.append(HangUp(at=at))
                result = await emu.run(script)
                v2v += reply_latencies(result, ends, TURN_GAP_SECS)
                for _ in range(200):
                    session = stack.finished(emu.config.call_sid)
                    if session:
                        server_v2v += [t["voice_to_voice"] for t in session.turns if "voice_to_voice" in t]
                        if verbose:
                            print(name, "emulator v2v", [round(x, 3) for x in v2v[-len(ends):]])
                            print(name, "server turns", session.turns)
                        break
                    await asyncio.sleep(0.02)
    added = [value - floor for value in server_v2v]
    return {
        "scenario": name, "provider_latency_ms": latencies, "turns_measured": len(server_v2v),
        "floor_secs": round(floor, 4),
        "caller_view_v2v_p50": round(statistics.median(v2v), 4),
        "caller_view_v2v_p95": round(percentile(v2v, 95), 4),
        "server_view_v2v_p50": round(statistics.median(server_v2v), 4),
        "server_view_v2v_p95": round(percentile(server_v2v, 95), 4),
        "added_p50": round(statistics.median(added), 4),
        "added_p95": round(percentile(added, 95), 4),
        "added_max": round(max(added), 4),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--verbose", action="store_true", help="print every turn's figures")
    args = parser.parse_args()
    setup_logging("WARNING")
    started = time.time()
    results = [await run_scenario(name, lat, args.calls, args.turns, args.verbose) for name, lat in SCENARIOS.items()]
    print(f"\nturn latency, 1 call at a time, {args.calls} calls x {args.turns} turns per scenario")
    print(f"{'scenario':21} {'floor':>6} {'caller p50':>10} {'caller p95':>10} {'server p50':>10} "
          f"{'server p95':>10} {'added p50':>9} {'added p95':>9}")
    for r in results:
        ms = {k: (v * 1000 if isinstance(v, float) else v) for k, v in r.items()}
        print(f"{r['scenario']:21} {ms['floor_secs']:4.0f}ms {ms['caller_view_v2v_p50']:8.0f}ms "
              f"{ms['caller_view_v2v_p95']:8.0f}ms {ms['server_view_v2v_p50']:8.0f}ms "
              f"{ms['server_view_v2v_p95']:8.0f}ms {ms['added_p50']:7.0f}ms {ms['added_p95']:7.0f}ms")
    out = ROOT / "bench" / "results" / "turn_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "duration_secs": round(time.time() - started),
                               "target": "added p95 <= 60 ms at 1 call", "results": results}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
