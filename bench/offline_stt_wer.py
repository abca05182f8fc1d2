"""Word error rate of the offline recogniser on telephone-quality speech.

    .venv/bin/python bench/offline_stt_wer.py

Speaks each line with Piper's bundled voice, brings it down to 8 kHz (what Exotel carries),
then decodes it as the offline STT does (upsampled to 16 kHz, pocketsphinx's bundled US
English model). Prints per-line results and the WER; writes bench/results/offline_stt_wer.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.speech_synth import speak  # noqa: E402
from pipelines.providers.pocketsphinx_stt import decode_pcm, new_decoder  # noqa: E402

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


def main() -> None:
    decoder = new_decoder()
    errors = words = 0
    rows, seconds = [], []
    for line in LINES:
        pcm = speak(line, 8000)
        started = time.perf_counter()
        heard = decode_pcm(decoder, pcm, 8000)
        seconds.append(time.perf_counter() - started)
        ref, hyp = line.lower().split(), heard.lower().split()
        distance = edit_distance(ref, hyp)
        errors, words = errors + distance, words + len(ref)
        rows.append({"said": line, "heard": heard, "errors": distance})
        print(f"{distance:2d} errors  {line!r} -> {heard!r}")
    wer = errors / words
    audio = sum(len(speak(line, 8000)) for line in LINES) / 16000
    print(f"\npocketsphinx (bundled en-us model), 8 kHz phone audio: WER {wer:.1%} over {words} words; "
          f"decoding took {sum(seconds):.1f} s for {audio:.1f} s of speech (real-time factor {sum(seconds) / audio:.2f})")
    out = ROOT / "bench" / "results" / "offline_stt_wer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"recogniser": "pocketsphinx en-us (PyPI bundle)", "audio": "Piper joe-medium at 8 kHz",
                               "wer": round(wer, 4), "words": words, "real_time_factor": round(sum(seconds) / audio, 3),
                               "lines": rows}, indent=2))


if __name__ == "__main__":
    main()
