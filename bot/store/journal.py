"""The record journal: call-record writes the database could not take yet, one JSON file each.

A write that must not be lost (a call's final record, a dialled call, a status callback) is
put here while the database is unavailable, and replayed into it when it answers again
(`bot.store.durable`), by whichever process of the machine gets to it first, also after a
restart. The folder (DATA_DIR/journal, mode 0700) holds:

    <ns>-<op>-<sid>-<rand>.json                      pending: any process may replay it
    <ns>-<op>-<sid>-<rand>.json.claim-<pid>-<token>  held by one process (writing or replaying)
    .tmp-*                                            being written (never read)
    rejected/                                         entries the database refused outright

Files are written atomically (temp file, fsync, rename, fsync of the folder) with mode 0600:
they hold leads and phone numbers. A process takes an entry by renaming it to its claim name,
so of several processes replaying at once exactly one gets each entry; it deletes the entry
only after the database committed the write. A claim whose process is gone (by pid, or an
instance of this process that closed its journal) or older than the lease goes back to
pending. Entries are sorted by creation time, so replay keeps the order they were made in.

The journal is bounded (entries and bytes): beyond that `add` raises `JournalFull`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger

ENTRY_SUFFIX = ".json"
CLAIM_MARK = ".claim-"
TEMP_PREFIX = ".tmp-"
REJECTED = "rejected"
DEFAULT_LEASE_SECS = 600.0  # a claim older than this is taken back even if its process lives
_SID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_LIVE_TOKENS: set[str] = set()  # open journals of this process (their claims are not stale)


class JournalFull(OSError):
    """The journal holds as many entries or bytes as it may."""


@dataclass(frozen=True)
class JournalEntry:
    """One pending write: what to do (`op`), for which call, with which arguments."""

    name: str  # the pending file name
    op: str
    call_sid: str
    args: dict[str, Any]
    created_at: str
    path: Path  # where the file is now (its claim name while held)


def _sid_part(call_sid: str) -> str:
    """The Sid as it appears in a file name (hostile characters removed, length capped)."""
    return _SID_UNSAFE.sub("", call_sid)[:64] or "nosid"


def _claim_owner(name: str) -> tuple[int, str] | None:
    """(pid, token) of a claim file name; None for anything else."""
    _, mark, owner = name.rpartition(CLAIM_MARK)
    pid, _, token = owner.partition("-")
    if not mark or not pid.isdigit() or not token:
        return None
    return int(pid), token


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Journal:
    """The journal folder of one process. Every method is synchronous file work (call it off
    the event loop, e.g. with `asyncio.to_thread`); several processes may share the folder."""

    def __init__(self, folder: str | Path, *, max_entries: int = 50_000, max_bytes: int = 512 * 1024 * 1024,
                 lease_secs: float = DEFAULT_LEASE_SECS):
        self.folder = Path(folder)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.lease_secs = lease_secs
        self._token = secrets.token_hex(6)
        self._claim_suffix = f"{CLAIM_MARK}{os.getpid()}-{self._token}"
        _LIVE_TOKENS.add(self._token)

    def close(self) -> None:
        """This instance holds nothing any more: its leftover claims are free for others."""
        _LIVE_TOKENS.discard(self._token)

    # -- writing -------------------------------------------------------------------------

    def ensure_folder(self) -> None:
        """Create the folder (0700), tightening the mode of one that exists."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.folder.stat().st_mode & 0o777 != 0o700:
            os.chmod(self.folder, 0o700)

    def add(self, op: str, call_sid: str, args: dict[str, Any], *, held: bool = False) -> JournalEntry:
        """Write one entry atomically. `held`: it starts claimed by this process (the writer is
        still trying the database itself; `release` hands it to the replayers)."""
        self.ensure_folder()
        created = datetime.now(UTC).isoformat()
        data = json.dumps({"v": 1, "op": op, "call_sid": call_sid, "created_at": created, "args": args},
                          ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        entries, size = self.usage()
        if entries + 1 > self.max_entries or size + len(data) > self.max_bytes:
            raise JournalFull(f"journal full: {entries} entries, {size} bytes in {self.folder}")
        name = f"{time.time_ns():020d}-{op}-{_sid_part(call_sid)}-{secrets.token_hex(4)}{ENTRY_SUFFIX}"
        final = self.folder / (name + self._claim_suffix if held else name)
        temp = self.folder / f"{TEMP_PREFIX}{name}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        os.close(fd)
        os.rename(temp, final)
        self._sync_folder()
        return JournalEntry(name, op, call_sid, args, created, final)

    def _sync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- taking, giving back, finishing --------------------------------------------------

    def pending(self) -> list[str]:
        """Pending entry names, oldest first."""
        try:
            names = [e.name for e in os.scandir(self.folder) if e.name.endswith(ENTRY_SUFFIX)
                     and not e.name.startswith(".") and e.is_file()]
        except FileNotFoundError:
            return []
        return sorted(names)

    def claim(self, name: str) -> JournalEntry | None:
        """Take a pending entry for this process; None if another process took it first.
        An unreadable entry is moved to rejected/ (and None returned)."""
        held = self.folder / (name + self._claim_suffix)
        try:
            os.rename(self.folder / name, held)
        except FileNotFoundError:
            return None
        os.utime(held)  # the claim's age counts from now (for the lease)
        try:
            record = json.loads(held.read_bytes())
            return JournalEntry(name, str(record["op"]), str(record["call_sid"]), dict(record["args"]),
                                str(record.get("created_at") or ""), held)
        except (ValueError, KeyError, TypeError) as error:
            logger.error(f"journal entry {name} is unreadable ({type(error).__name__}); moved to {REJECTED}/")
            self._move_to_rejected(held, name)
            return None

    def release(self, entry: JournalEntry) -> None:
        """Give a held entry back: pending again, for any process to replay."""
        with contextlib.suppress(FileNotFoundError):  # a lease expired and someone else has it
            os.rename(entry.path, self.folder / entry.name)

    def done(self, entry: JournalEntry) -> None:
        """The database committed the write: the entry goes."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)

    def reject(self, entry: JournalEntry) -> None:
        """The database refused the write outright (not an outage): keep it aside for a person."""
        self._move_to_rejected(entry.path, entry.name)

    def _move_to_rejected(self, path: Path, name: str) -> None:
        target = self.folder / REJECTED
        target.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, target / name)

    def recover(self) -> int:
        """Stale claims (their process gone, or older than the lease) back to pending."""
        recovered = 0
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        now = time.time()
        for item in entries:
            if item.name.startswith(TEMP_PREFIX):  # a write cut off by a crash: it never counted
                with contextlib.suppress(FileNotFoundError):
                    if now - item.stat().st_mtime > self.lease_secs:
                        os.unlink(item.path)
                continue
            owner = _claim_owner(item.name)
            if owner is None or item.name.startswith("."):
                continue
            pid, token = owner
            if token in _LIVE_TOKENS:
                stale = False
            elif pid == os.getpid():
                stale = True  # an instance of this process that has closed its journal
            else:
                stale = not _process_alive(pid)
            if not stale:
                with contextlib.suppress(FileNotFoundError):
                    stale = now - item.stat().st_mtime > self.lease_secs
            if stale:
                name = item.name.rpartition(CLAIM_MARK)[0]
                with contextlib.suppress(FileNotFoundError):
                    os.rename(item.path, self.folder / name)
                    recovered += 1
        return recovered

    # -- looking ---------------------------------------------------------------------------

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) waiting, pending and held (not rejected ones)."""
        count = size = 0
        try:
            for item in os.scandir(self.folder):
                if item.name.startswith(".") or not item.is_file() or ENTRY_SUFFIX not in item.name:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    size += item.stat().st_size
                    count += 1
        except FileNotFoundError:
            pass
        return count, size

    def find(self, op: str, call_sid: str) -> dict[str, Any] | None:
        """The arguments of the newest entry of `op` for this call (pending or held), if any."""
        infix = f"-{op}-{_sid_part(call_sid)}-"
        try:
            names = sorted((e.name for e in os.scandir(self.folder) if infix in e.name
                            and not e.name.startswith(".")), reverse=True)
        except FileNotFoundError:
            return None
        for name in names:
            try:
                record = json.loads((self.folder / name).read_bytes())
            except (OSError, ValueError):
                continue  # claimed or replayed meanwhile under another name
            if record.get("op") == op and record.get("call_sid") == call_sid:
                return dict(record.get("args") or {})
        return None
