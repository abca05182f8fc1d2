"""Where a call's recording stays, and reading it back for GET /calls/{sid}/recording.

The recorder writes the WAV under this node's DATA_DIR as the call goes. With
OBJECT_STORE_URL it is uploaded at hang-up to `<url>/recordings/<call_sid>.wav`, so any node can
serve it, and the local copy is removed; if the upload fails, the local file stays and the
record points at it (nothing is lost; a warning says so).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from loguru import logger

from bot.config.object_storage import ObjectStorageError, S3Objects, objects_for
from bot.config.settings import Settings
from pipelines.recorder import recording_path


async def keep_recording(settings: Settings, local: Path, call_sid: str) -> str:
    """The recording's location for the record: uploaded (then the local file removed), or local."""
    objects = objects_for(settings, "recordings", settings.recordings_dir)
    if not isinstance(objects, S3Objects):
        return str(local)
    try:
        await objects.put_file(local.name, local)
    except ObjectStorageError as error:
        logger.bind(call_sid=call_sid).warning(f"recording kept on this node only ({local}): {error}")
        return str(local)
    await asyncio.to_thread(local.unlink, True)
    return objects.location(local.name)


async def recording_chunks(settings: Settings, call_sid: str,
                           location: str | None) -> AsyncIterator[bytes] | Path | None:
    """The WAV of `call_sid`: chunks from object storage when its record says so, else the
    file in this node's recordings folder (the path is rebuilt from the validated call id,
    never taken from the record). None when it is in neither."""
    name = recording_path(settings.recordings_dir, call_sid).name  # ValueError for a bad id
    objects = objects_for(settings, "recordings", settings.recordings_dir)
    if isinstance(objects, S3Objects) and location and objects.key_of(location) == name:
        return await objects.stream(name)
    local = settings.recordings_dir / name
    return local if await asyncio.to_thread(local.is_file) else None
