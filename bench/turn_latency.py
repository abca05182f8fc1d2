"""Turn latency and barge-in as the caller hears them, with the campaigns in configs/ as shipped.

    .venv/bin/python bench/turn_latency.py [--calls 3] [--campaign real_estate]

Every campaign in configs/ runs untouched (the server loads the same files it ships with:
greeting, turn-taking, fillers, voicemail, idle prompts), one call at a time, over real sockets
against the wire-level fakes of Deepgram, OpenAI and ElevenLabs at fixed latencies: STT 150 ms
(final transcript), LLM 300 ms to first token, TTS 120 ms to first byte, 570 ms in all.
The emulated Exotel (bot/simulator/exotel_emulator.py) plays the caller: it hears the greeting out, then
says five lines, each 0.7 s after the bot's audio has played out, except the 2nd and 4th, which
cut in 1 s into the bot's reply (a real interruption: >= 2 words while the bot is talking).

What the caller experiences, on the emulator's clock:
- turn: from when the emulator sent the caller's last voiced audio (last sample above an
  amplitude threshold, bench/measures.py speech_end_offset) to the first bot media after it;
- added: turn minus the providers' 570 ms; the turn policy's wait (VAD stop_secs, the speech
  timeout, waiting for the STT's final) is part of what the caller waits for and is not taken off;
- barge-in: from when the emulator sent the interrupting line's first voiced audio to the
  `clear` it received;
- stale: bot media that arrived after that `clear` before the bot could have started its
  answer (the interrupting line's end + the VAD's stop_secs);
- violations: protocol violations the emulator recorded.

The emulator sends the caller's audio in 100 ms chunks; audio x ms into a chunk counts as
spoken at the chunk's send time + x. A real Exotel sends a chunk once its 100 ms have been
captured, and the telephone network adds its own delay: a real caller waits up to ~100 ms
more, plus the network's, than these figures.

What is not as in production, and is printed beside the figures: the fake LLM says the same
fixed line every turn (no tool calls), and the fake STT's transcript (the scripted lines) comes
one word per 400 ms of speech in its interim results, which is what `min_words` counts.
Writes bench/results/turn_latency.json (date, machine, commit, figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measures import (  # noqa: E402
    barge_in,
    caller_time,
    percentile,
    reply_starts,
    speech_end_offset,
    speech_start_offset,
    turn_latency,
)
from bot.config.campaigns import CampaignBook  # noqa: E402
from bot.config.logging_setup import setup_logging  # noqa: E402
from bot.simulator.caller_speech import speak  # noqa: E402
from bot.simulator.exotel_emulator import HangUp, Reply  # noqa: E402
from testing.agent_stack import agent_stack  # noqa: E402
from testing.fakes.openai_chat import Reply as LLMReply  # noqa: E402

STT_MS, LLM_TTFT_MS, TTS_TTFB_MS = 150, 300, 120
PROVIDERS_SECS = (STT_MS + LLM_TTFT_MS + TTS_TTFB_MS) / 1000
MS_PER_CHAR = 30  # the TTS fake's speech rate: a 120-character reply talks for 3.6 s
STT_INTERIM_MS = 400  # the STT fake's default: one more word of the transcript per 400 ms of speech
ANSWER_AFTER = 0.7  # the caller answers 0.7 s after the bot's audio has played out
BARGE_IN_AFTER = 1.0  # ... or cuts in 1 s after the bot started its reply
TURN_WITHIN = 4.0  # a reply later than this counts as none

BACKCHANNEL = "backchannel"  # said over the bot's reply, to be resumed from, not answered

# What the caller says and the fake LLM answers, per language (the campaign's `language`).
# Caller lines: (text, interrupts); the interrupting ones have >= 2 words; the last is a
# backchannel said 1 s into the bot's reply.
CALLERS = {
    "en": {
        "lines": [("Yes I can talk now", False), ("Wait wait I have a question", True),
                  ("My budget is about eighty lakhs", False), ("Sorry one more thing please", True),
                  ("Weekends are better for me", False), ("Hmm okay", BACKCHANNEL)],
        "reply": ("Okay, noted. We have two and three bedroom homes in Whitefield, ready next year. "
                  "What budget do you have in mind?"),
    },
    "hi": {
        "lines": [("Haan boliye abhi baat kar sakta hoon", False), ("Ek minute ruko mera sawaal hai", True),
                  ("Project achha laga mujhe", False), ("Suniye ek aur baat hai", True),
                  ("Price thoda zyada hai", False), ("Haan ji", BACKCHANNEL)],
        "reply": ("Achha, samajh gayi. Hamare paas do aur teen BHK flats hain, possession agle saal hai. "
                  "Aapka budget kitna hai?"),
    },
}


def caller_for(language: str) -> dict:
    return CALLERS["hi" if language.lower().startswith(("hi", "multi")) else "en"]


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"nproc": os.cpu_count(), "cpu_model": model, "loadavg_before": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version()}


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD")
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def stats(values: list[float]) -> dict:
    return {"n": len(values), "p50": r4(statistics.median(values)) if values else None,
            "p95": r4(percentile(values, 95)), "max": r4(max(values)) if values else None}


def r4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def measure_backchannel(result, stack, start: float, pcm: bytes, reply: str, requests: int, turns: int,
                        into: dict[str, list[float]], call: dict) -> None:
    """The backchannel said over the last reply: how soon the bot paused (onset -> clear), how
    soon it resumed after the STT's final for it (the fake's send time -> the first bot media
    after the clear), how much of the reply the caller heard, and LLM requests made for it."""
    onset_at = caller_time(result, start + speech_start_offset(pcm))
    clear = next((t for t in result.clears_at if onset_at is not None and t >= onset_at), None)
    if onset_at is None or clear is None:
        return
    into["pause_secs"].append(clear - onset_at)
    final = stack.deepgram.accepted[-1].utterances[-1].final_sent_at
    resumed = next((seg.start for seg in result.segments if seg.start - result.started_at > clear), None)
    if final is not None and resumed is not None:
        into["resume_after_stt_final_secs"].append(resumed - final)
    reply_from = max((seg.start for seg in result.segments if seg.start - result.started_at < onset_at
                      and not any(p.end == seg.start for p in result.segments)), default=None)
    if reply_from is not None:
        reply_secs = len(reply) * MS_PER_CHAR / 1000
        heard = sum(len(seg.pcm) for seg in result.segments
                    if reply_from <= seg.start < reply_from + reply_secs + 2.0) / 16000
        into["reply_heard_fraction"].append(heard / reply_secs)
    into["llm_requests_for_it"].append(requests - turns)
    call["backchannel_pause"] = round(clear - onset_at, 3)


async def run_campaign(campaign, calls: int, verbose: bool) -> dict:
    caller = caller_for(campaign.language)
    lines = caller["lines"]
    pcms = [speak(text) for text, _ in lines]
    greeting = campaign.render_greeting({"name": "Rahul"})
    reply = caller["reply"]
    # Long enough for every line to be answered before the hang-up (the emulator answers
    # when the bot has finished, so the estimate only bounds the call's length).
    call_secs = (len(greeting) * MS_PER_CHAR / 1000 + 1.5
                 + sum(len(pcm) / 16000 + ANSWER_AFTER + 2.0 + len(reply) * MS_PER_CHAR / 1000 for pcm in pcms))
    quiet = campaign.turn_taking.vad.stop_secs
    turns: list[float] = []
    turns_by_kind: dict[str, list[float]] = {"answer": [], "after_interruption": []}
    clears: list[float] = []
    stale = violations = missed_turns = not_mid_reply = no_clear = fillers = 0
    backchannels: dict[str, list[float]] = {"pause_secs": [], "resume_after_stt_final_secs": [],
                                            "reply_heard_fraction": [], "llm_requests_for_it": []}
    per_call = []
    with tempfile.TemporaryDirectory() as tmp:
        async with agent_stack(
            Path(tmp), stt_script=[text for text, _ in lines], llm=lambda body: LLMReply(text=reply),
            campaign_tweaks=None,  # the campaigns as shipped
            deepgram_kwargs={"latency_ms": STT_MS, "interim_interval_ms": STT_INTERIM_MS},
            openai_kwargs={"ttft_ms": LLM_TTFT_MS},
            elevenlabs_kwargs={"ttfb_ms": TTS_TTFB_MS, "ms_per_char": MS_PER_CHAR},
        ) as stack:
            for _ in range(calls):
                emu = stack.emulator(custom_parameters={"name": "Rahul", "campaign": campaign.name},
                                     max_secs=call_secs + 10)
                script = [Reply(pcm=pcm, after=ANSWER_AFTER, barge_in_after=BARGE_IN_AFTER if interrupts else None,
                                text=text) for pcm, (text, interrupts) in zip(pcms, lines, strict=False)]
                requests_before = len(stack.openai.requests)
                result = await emu.run([*script, HangUp(at=call_secs)])
                starts = reply_starts(result)
                call = {"turns": [], "barge_ins": []}
                for start, pcm, (_text, interrupts) in zip(starts, pcms, lines, strict=False):
                    end = start + speech_end_offset(pcm)
                    if interrupts == BACKCHANNEL:
                        continue  # measured below: not a turn
                    latency = turn_latency(result, end, TURN_WITHIN)
                    if latency is None:
                        missed_turns += 1
                    else:
                        turns.append(latency)
                        turns_by_kind["after_interruption" if interrupts else "answer"].append(latency)
                        call["turns"].append(round(latency, 3))
                    if interrupts:
                        b = barge_in(result, start + speech_start_offset(pcm), end, quiet)
                        if b is None or not b["mid_reply"]:
                            not_mid_reply += 1
                            continue
                        if b["clear"] is None:
                            no_clear += 1
                        else:
                            clears.append(b["clear"])
                            call["barge_ins"].append(round(b["clear"], 3))
                        stale += b["stale"]
                requests = len(stack.openai.requests) - requests_before
                if len(starts) == len(lines):
                    measure_backchannel(result, stack, starts[-1], pcms[-1], reply, requests,
                                        sum(1 for _, kind in lines if kind != BACKCHANNEL), backchannels, call)
                missed_turns += len(lines) - len(starts)
                violations += len(result.violations)
                session = None
                for _ in range(500):
                    session = stack.finished(emu.config.call_sid)
                    if session:
                        break
                    await asyncio.sleep(0.02)
                fillers += (session.metrics.get("fillers_played", 0) if session else 0)
                per_call.append(call)
                if verbose:
                    print(campaign.name, call, result.violations, flush=True)
    tt = campaign.turn_taking
    added = [t - PROVIDERS_SECS for t in turns]
    return {
        "campaign": campaign.name,
        "turn_taking": tt.model_dump(),
        "calls": calls,
        "turns_expected": calls * sum(1 for _, kind in lines if kind != BACKCHANNEL),
        "turns_measured": len(turns),
        "turns_missed": missed_turns,
        "turn_secs": stats(turns),
        "turn_secs_by_kind": {k: stats(v) for k, v in turns_by_kind.items()},
        "added_secs": stats(added),
        "barge_ins_expected": calls * sum(1 for _, kind in lines if kind is True),
        "backchannels": {"expected": calls, **{k: stats(v) for k, v in backchannels.items()}},
        "barge_ins_not_mid_reply": not_mid_reply,
        "barge_ins_without_clear": no_clear,
        "barge_in_clear_secs": stats(clears),
        "stale_media_after_clear": stale,
        "violations": violations,
        "fillers_played": fillers,
        "per_call": per_call,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3, help="calls per campaign (5 caller lines, 2 interruptions each)")
    parser.add_argument("--campaign", action="append", help="only this campaign (repeatable; default: all in configs/)")
    parser.add_argument("--verbose", action="store_true", help="print every call's figures")
    args = parser.parse_args()
    setup_logging("WARNING")
    started = time.time()
    host = machine()
    book = CampaignBook(ROOT / "configs")
    names = args.campaign or book.names()
    results = [await run_campaign(book.get(name, name), args.calls, args.verbose) for name in names]
    overrides = [
        "LLM: the fake says one fixed line every turn, no tool calls "
        f"(en: {len(CALLERS['en']['reply'])} chars, hi: {len(CALLERS['hi']['reply'])} chars)",
        f"STT: the fake's interim results add one scripted word per {STT_INTERIM_MS} ms of speech "
        "(what min_words counts); its final comes 150 ms after the end of speech",
        f"TTS: the fake speaks {MS_PER_CHAR} ms per character",
    ]
    ms = lambda v: "-" if v is None else f"{v * 1000:.0f}"  # noqa: E731
    print(f"\nturn latency as the caller hears it: campaigns as shipped, 1 call at a time, {args.calls} calls each; "
          f"providers STT {STT_MS} + LLM TTFT {LLM_TTFT_MS} + TTS TTFB {TTS_TTFB_MS} = {PROVIDERS_SECS * 1000:.0f} ms")
    print(f"{'campaign':18} {'turns':>6} {'turn p50/p95':>14} {'added p50/p95':>14} {'barge-ins':>9} "
          f"{'clear p50/p95':>14} {'stale':>5} {'viol.':>5} {'fillers':>7}")
    for r in results:
        t, a, c = r["turn_secs"], r["added_secs"], r["barge_in_clear_secs"]
        print(f"{r['campaign']:18} {r['turns_measured']:>2}/{r['turns_expected']:<3} "
              f"{ms(t['p50']):>6} / {ms(t['p95']):<5} {ms(a['p50']):>6} / {ms(a['p95']):<5} "
              f"{c['n']:>4}/{r['barge_ins_expected']:<4} {ms(c['p50']):>6} / {ms(c['p95']):<5} "
              f"{r['stale_media_after_clear']:>5} {r['violations']:>5} {r['fillers_played']:>7}")
        bc = r["backchannels"]
        print(f"{'':18} backchannel ({bc['pause_secs']['n']}/{bc['expected']}): pause {ms(bc['pause_secs']['p50'])} ms "
              f"after onset, resumed {ms(bc['resume_after_stt_final_secs']['p50'])} ms after the STT's final, "
              f"reply heard {bc['reply_heard_fraction']['p50'] or 0:.0%}, LLM requests for it "
              f"{bc['llm_requests_for_it']['max']}")
        tt = r["turn_taking"]
        print(f"{'':18} turn_taking as shipped: min_words {tt['min_words']}, vad start/stop "
              f"{tt['vad']['start_secs']}/{tt['vad']['stop_secs']} s, {tt['stop_strategy']} "
              f"{tt['user_speech_timeout_secs']} s")
    print("not as in production (the figures depend on them):")
    for line in overrides:
        print(f"  - {line}")
    out = ROOT / "bench" / "results" / "turn_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "duration_secs": round(time.time() - started),
        "command": "python bench/turn_latency.py " + " ".join(sys.argv[1:]),
        "machine": host, "git_commit": git_commit(),
        "campaigns": "configs/*.yaml as shipped (no overrides)",
        "provider_latency_ms": {"stt_final": STT_MS, "llm_ttft": LLM_TTFT_MS, "tts_ttfb": TTS_TTFB_MS,
                                "sum": round(PROVIDERS_SECS * 1000)},
        "not_as_in_production": overrides,
        "definitions": {
            "turn": "emulator sent the caller's last voiced audio -> first bot media it received",
            "added": "turn - providers' latencies (570 ms); the turn policy's wait is not subtracted",
            "barge_in_clear": "emulator sent the interrupting line's first voiced audio -> the clear it received",
            "stale_media_after_clear": "bot media received after that clear and before the interrupting "
                                       "line's end + vad.stop_secs",
            "caller_clock": "audio x ms into a 100 ms chunk counts as spoken at the chunk's send time + x; "
                            "Exotel's own chunking (up to 100 ms) and the telephone network are not included",
        },
        "results": results,
    }, indent=2))
    print(f"wrote {out.relative_to(ROOT)} ({round(time.time() - started)} s)")


if __name__ == "__main__":
    asyncio.run(main())
