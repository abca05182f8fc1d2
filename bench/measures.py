"""Small measurements the benchmarks share."""

from __future__ import annotations

import numpy as np

from bot.simulator.exotel_emulator import EmulatorResult


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank); None when there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def speech_end_offset(pcm: bytes, rate: int = 8000) -> float:
    """Seconds from the start of `pcm` to its last clearly voiced sample."""
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16))
    voiced = np.nonzero(samples > 500)[0]
    return (voiced[-1] + 1) / rate if len(voiced) else 0.0


def speech_start_offset(pcm: bytes, rate: int = 8000) -> float:
    """Seconds from the start of `pcm` to its first clearly voiced sample."""
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16))
    voiced = np.nonzero(samples > 500)[0]
    return voiced[0] / rate if len(voiced) else 0.0


def reply_latencies(result: EmulatorResult, speech_ends: list[float], within: float) -> list[float]:
    """The caller's view of each turn: from when the emulator sent the audio holding the end
    of the caller's speech (`speech_ends`, seconds into the call) to the first bot media after
    it; turns with no reply within `within` seconds are left out."""
    chunk_secs = result.config.chunk_ms / 1000
    latencies = []
    for end in speech_ends:
        chunk = int(end / chunk_secs)
        if chunk >= len(result.caller_chunks_sent_at):
            continue
        sent = result.caller_chunks_sent_at[chunk] + (end - chunk * chunk_secs)
        first = next((t for t in result.media_at if t > sent), None)
        if first is not None and first - sent < within:
            latencies.append(float(first - sent))
    return latencies


# ---------------------------------------------------------------- the caller's clock
# The emulator sends the caller's audio in chunks of `chunk_ms`; caller_chunks_sent_at[k] is
# when script chunk k (audio from k * chunk_ms into the script's timeline) left. Audio at
# offset x inside a chunk is taken to have been spoken at that chunk's send time + x, the
# same mapping for the end of speech (turn latency) and its onset (barge-in).


def caller_time(result: EmulatorResult, script_secs: float) -> float | None:
    """When the emulator sent the caller's audio at `script_secs` on the script's timeline
    (seconds since the socket opened); None if that chunk was never sent."""
    chunk_secs = result.config.chunk_ms / 1000
    chunk = int(round(script_secs / chunk_secs, 9))
    if not 0 <= chunk < len(result.caller_chunks_sent_at):
        return None
    return result.caller_chunks_sent_at[chunk] + (script_secs - chunk * chunk_secs)


def reply_starts(result: EmulatorResult) -> list[float]:
    """Where each of the caller's `Reply` lines begins on the script's timeline (seconds):
    the emulator notes `caller_said` just before it sends the chunk the line starts in."""
    chunk_secs = result.config.chunk_ms / 1000
    sent = result.caller_chunks_sent_at
    starts = []
    for at, kind, _ in result.events:
        if kind == "caller_said":
            chunk = next((k for k, t in enumerate(sent) if t >= at), len(sent))
            starts.append(chunk * chunk_secs)
    return starts


def bot_playing_at(result: EmulatorResult, t: float) -> bool:
    """Was the caller hearing bot audio at `t` (seconds since the socket opened)?"""
    return any(seg.start - result.started_at <= t < seg.end - result.started_at for seg in result.segments)


def turn_latency(result: EmulatorResult, speech_end: float, within: float) -> float | None:
    """The caller's view of one turn: from when the emulator sent the caller's last voiced
    audio (`speech_end`, on the script's timeline) to the first bot media after it; None when
    nothing came within `within` seconds."""
    sent = caller_time(result, speech_end)
    if sent is None:
        return None
    first = next((t for t in result.media_at if t > sent), None)
    return None if first is None or first - sent >= within else float(first - sent)


def barge_in(result: EmulatorResult, onset: float, speech_end: float, quiet_secs: float,
             within: float = 3.0) -> dict | None:
    """The caller's view of one interruption: `onset`/`speech_end` of the interrupting line
    on the script's timeline. Returns None when its audio was never sent, else
      mid_reply: the caller was hearing the bot when they started talking;
      clear: seconds from the onset to the first `clear` after it (None: no clear within `within`);
      stale: bot media that arrived after that clear and before the bot could have begun a
        reply to it (the caller's speech end + `quiet_secs`, the silence the VAD needs to
        call the turn over): audio of the interrupted line sent after its `clear`."""
    onset_at, end_at = caller_time(result, onset), caller_time(result, speech_end)
    if onset_at is None or end_at is None:
        return None
    clear = next((t for t in result.clears_at if onset_at <= t <= onset_at + within), None)
    stale = 0 if clear is None else sum(1 for t in result.media_at if clear < t <= end_at + quiet_secs)
    return {"mid_reply": bot_playing_at(result, onset_at),
            "clear": None if clear is None else float(clear - onset_at), "stale": stale}
