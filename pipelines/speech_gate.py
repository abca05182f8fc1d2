"""Which of the caller's audio the speech-to-text needs to hear.

A caller spends much of a call listening: the line carries silence or faint hiss. Deepgram
bills (and our worker spends a websocket send on) every 100 ms chunk of it, yet it can never
hold a word our turn-taking would act on: the VAD calls nothing speech unless the last 0.4 s
measure at least `vad.min_volume`. So audio is held back while it is too faint for that by a
margin (6 dB under the VAD's own bound, see pipelines.providers.silero.faint_energy), and when
the line livens up the STT gets the half second before it (the onset of a word), then everything
until the line has been quiet for HANGOVER_SECS (Deepgram's endpointing needs the silence after
speech, and Pipecat's Finalize comes 0.2 s after it). Deepgram's socket stays open through the
quiet with Pipecat's KeepAlives. `stt.stream_silence: true` turns this off.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from pipecat.audio.volume import VOLUME_WINDOW_SECS

from pipelines.providers.silero import faint_energy

PREROLL_SECS = 0.5
HANGOVER_SECS = 1.5
MARGIN = 4.0  # 6 dB: the gate opens on audio a quarter as energetic as the VAD could ever call loud


class SpeechGate:
    """Per call: feed it every chunk of caller audio, send what it returns."""

    def __init__(self, sample_rate: int, min_volume: float):
        self._rate = sample_rate
        self._open_energy = faint_energy(min_volume, sample_rate) / MARGIN
        self._window: deque[tuple[int, float]] = deque()  # (samples, energy) of the last 0.4 s
        self._window_samples = 0
        self._preroll: deque[bytes] = deque()
        self._preroll_bytes = 0
        self._position = 0  # samples seen
        self._open_until = 0  # sample position the gate stays open to
        self.sent_bytes = 0
        self.held_back_bytes = 0

    def admit(self, pcm: bytes) -> bytes:
        """The audio to send now for this chunk: b"" while the line is quiet; on waking, the
        pre-roll and the chunk together."""
        samples = len(pcm) // 2
        self._position += samples
        if self._open_energy:
            x = np.frombuffer(pcm, np.int16, count=samples).astype(np.float32)
            self._remember(samples, float(np.dot(x, x)))
            if sum(energy for _, energy in self._window) >= self._open_energy:
                self._open_until = self._position + int(HANGOVER_SECS * self._rate)
        else:
            self._open_until = self._position  # no volume gate: every chunk may count
        if self._position <= self._open_until:
            if self._preroll:
                pcm = b"".join(self._preroll) + pcm
                self._preroll.clear()
                self._preroll_bytes = 0
            self.sent_bytes += len(pcm)
            return pcm
        self._preroll.append(pcm)
        self._preroll_bytes += len(pcm)
        while self._preroll_bytes - len(self._preroll[0]) >= PREROLL_SECS * self._rate * 2:
            dropped = self._preroll.popleft()
            self._preroll_bytes -= len(dropped)
            self.held_back_bytes += len(dropped)
        return b""

    def _remember(self, samples: int, energy: float) -> None:
        """Keep the chunks covering the last VOLUME_WINDOW_SECS (what the VAD's volume measures)."""
        self._window.append((samples, energy))
        self._window_samples += samples
        while self._window_samples - self._window[0][0] >= VOLUME_WINDOW_SECS * self._rate:
            self._window_samples -= self._window.popleft()[0]

    @property
    def held_back_secs(self) -> float:
        """Audio never sent (what is still in the pre-roll counts as not yet decided)."""
        return self.held_back_bytes / (2 * self._rate)

    @property
    def sent_secs(self) -> float:
        return self.sent_bytes / (2 * self._rate)
