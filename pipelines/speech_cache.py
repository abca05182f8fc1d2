"""Lines synthesized ahead of time (greetings, apologies, fillers), kept as files.

The cache lives under DATA_DIR so every worker process (and machine sharing the folder)
sees what another prepared: a greeting synthesized when the call was dialled is there when
the caller answers, whichever process takes the socket. Reads and writes run off the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from loguru import logger

from bot.config.campaigns import TTSConfig
from bot.config.private_files import private_folder, write_private


def speech_key(tts: TTSConfig, text: str, sample_rate: int) -> str:
    """Stable name for `text` spoken by this voice at this rate."""
    spec = f"{tts.provider}|{tts.voice}|{tts.model}|{tts.speed}|{sample_rate}|{text}"
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()[:32]


class SpeechCache:
    """Raw 16-bit mono PCM files named by `speech_key`; writes are atomic (tmp + rename)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._inflight: dict[str, asyncio.Task[bytes | None]] = {}

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.pcm"

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def put(self, key: str, pcm: bytes) -> None:
        def write() -> None:
            private_folder(self.folder)
            write_private(self._path(key), pcm)  # atomic: readers never see half a line

        await asyncio.to_thread(write)

    async def get_or_make(
        self, key: str, synthesize: Callable[[], Awaitable[bytes]]
    ) -> bytes | None:
        """The cached audio, else synthesize it once (concurrent askers share the work)."""
        cached = await self.get(key)
        if cached is not None:
            return cached
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._make(key, synthesize))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _make(self, key: str, synthesize: Callable[[], Awaitable[bytes]]) -> bytes | None:
        try:
            pcm = await synthesize()
        except Exception as error:
            logger.warning(f"could not pre-synthesize speech: {type(error).__name__}: {error}")
            return None
        if pcm:
            await self.put(key, pcm)
        return pcm or None
