"""Where shared files live: prepared speech and recordings.

On one machine, a folder under DATA_DIR (private files, written atomically). With several
nodes, what one node writes (a greeting prepared while the phone rang, a call's recording)
must be readable from any other: OBJECT_STORE_URL (`s3://bucket/prefix`, any S3-compatible
service through OBJECT_STORE_ENDPOINT; credentials from the standard AWS_* variables) puts
them in object storage, through obstore. Keys are ours (a hash, a validated call id), checked
again here: nothing from the wire picks a path.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.config.private_files import private_folder, write_private

if TYPE_CHECKING:
    from bot.config.settings import Settings

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,200}(/[A-Za-z0-9_.-]{1,200}){0,3}")
# A store that is down or hangs must cost a call a cache miss, not minutes: each request is
# bounded and retried once (obstore's defaults: 10 retries over up to 3 minutes).
REQUEST_TIMEOUT = "5s"
CONNECT_TIMEOUT = "2s"
RETRIES = 1
RETRY_TIMEOUT = timedelta(seconds=5)


class ObjectStorageError(RuntimeError):
    """The object store refused or could not be reached; the message is one line."""


def checked_key(key: str) -> str:
    """`key` if it is a plain relative name (letters, digits, `_.-`, up to four segments)."""
    if not KEY_PATTERN.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"not an object key: {key[:60]!r}")
    return key


class Objects(Protocol):
    """Bytes by key, wherever they live."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, data: bytes) -> None: ...

    def location(self, key: str) -> str: ...


class FolderObjects:
    """Objects as private files under `folder` (the one-machine default)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / checked_key(key)

    async def get(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            return None

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def write() -> None:
            private_folder(path.parent)
            write_private(path, data)  # atomic: readers never see half an object

        await asyncio.to_thread(write)

    def location(self, key: str) -> str:
        return str(self._path(key))


class S3Objects:
    """Objects in an S3-compatible bucket under a prefix (obstore, async, no threads); make
    one per process and area (`objects_for`): it holds the connection pool."""

    def __init__(self, url: str, *, endpoint: str | None = None, region: str | None = None):
        from obstore.store import S3Store  # only where object storage is configured

        options: dict[str, Any] = {}
        if endpoint:
            options["endpoint"] = endpoint
        if region:
            options["region"] = region
        self.url = url.rstrip("/")
        client_options = {"timeout": REQUEST_TIMEOUT, "connect_timeout": CONNECT_TIMEOUT,
                          "allow_http": bool(endpoint and endpoint.startswith("http://"))}
        self._store = S3Store.from_url(self.url, client_options=client_options,  # type: ignore[arg-type]
                                       retry_config={"max_retries": RETRIES, "retry_timeout": RETRY_TIMEOUT},
                                       **options)

    @contextmanager
    def _errors(self, doing: str, key: str) -> Iterator[None]:
        """Any failure but a missing object, as one-line ObjectStorageError."""
        try:
            yield
        except FileNotFoundError:
            raise
        except Exception as error:
            raise ObjectStorageError(f"object store {self.url}: {doing} {key}: {_one_line(error)}") from None

    async def _open(self, key: str) -> Any | None:
        """obstore's GetResult for `key`, or None if there is no such object."""
        import obstore

        try:
            with self._errors("reading", key):
                return await obstore.get_async(self._store, checked_key(key))
        except FileNotFoundError:
            return None

    async def get(self, key: str) -> bytes | None:
        result = await self._open(key)
        if result is None:
            return None
        with self._errors("reading", key):
            return bytes(await result.bytes_async())

    async def put(self, key: str, data: bytes) -> None:
        import obstore

        with self._errors("writing", key):
            await obstore.put_async(self._store, checked_key(key), data)

    async def stream(self, key: str, chunk_bytes: int = 256 * 1024) -> AsyncIterator[bytes] | None:
        """The object in chunks (a recording is never held whole), or None if there is none."""
        result = await self._open(key)
        if result is None:
            return None

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in result.stream(min_chunk_size=chunk_bytes):
                yield bytes(chunk)

        return chunks()

    async def put_file(self, key: str, path: Path) -> None:
        """Upload a file as it is on disk (streamed, in parts when large: a recording)."""
        import obstore

        with self._errors("writing", key):
            await obstore.put_async(self._store, checked_key(key), path)

    def location(self, key: str) -> str:
        return f"{self.url}/{checked_key(key)}"

    def key_of(self, location: str) -> str | None:
        """The key of a location this store gave (`location`), else None."""
        prefix = f"{self.url}/"
        return checked_key(location[len(prefix):]) if location.startswith(prefix) else None


def _one_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


_s3_stores: dict[tuple[str, str | None, str | None], S3Objects] = {}


def objects_for(settings: Settings, area: str, local_folder: Path) -> Objects:
    """The store for one area ("speech", "recordings"): under OBJECT_STORE_URL/<area> when
    that is set (one client per process and area), else `local_folder`."""
    if not settings.object_store_url:
        return FolderObjects(local_folder)
    key = (f"{settings.object_store_url.rstrip('/')}/{checked_key(area)}", settings.object_store_endpoint,
           settings.object_store_region)
    if key not in _s3_stores:
        _s3_stores[key] = S3Objects(key[0], endpoint=key[1], region=key[2])
    return _s3_stores[key]
