"""Lines synthesized ahead of time (greetings, apologies, fillers), kept as objects.

The cache lives under DATA_DIR (or, with OBJECT_STORE_URL, in object storage) so every
worker process, and every node, sees what another prepared: a greeting synthesized when the
call was dialled is there when the caller answers, whichever process or machine takes the
socket. Reads and writes run off the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

from loguru import logger

from bot.config.campaigns import TTSConfig
from bot.config.object_storage import Objects, ObjectStorageError, objects_for
from bot.config.settings import Settings


def speech_key(tts: TTSConfig, text: str, sample_rate: int) -> str:
    """Stable name for `text` spoken by this voice at this rate."""
    spec = f"{tts.provider}|{tts.voice}|{tts.model}|{tts.speed}|{sample_rate}|{text}"
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()[:32]


def speech_cache_for(settings: Settings) -> SpeechCache:
    """The cache every process and node of this deployment shares (see the module docstring)."""
    return SpeechCache(objects_for(settings, "speech", settings.speech_cache_dir))


class SpeechCache:
    """Raw 16-bit mono PCM objects named by `speech_key`; writes are atomic. An object store
    that fails is a miss (the line is synthesized live), never a failed call."""

    def __init__(self, objects: Objects):
        self.objects = objects
        self._inflight: dict[str, asyncio.Task[bytes | None]] = {}

    async def get(self, key: str) -> bytes | None:
        try:
            return await self.objects.get(f"{key}.pcm")
        except ObjectStorageError as error:
            logger.warning(f"prepared speech not read: {error}")
            return None

    async def put(self, key: str, pcm: bytes) -> None:
        try:
            await self.objects.put(f"{key}.pcm", pcm)
        except ObjectStorageError as error:
            logger.warning(f"prepared speech not kept: {error}")

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
