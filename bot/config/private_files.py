"""Files only the server's own user may read: DATA_DIR holds call records, recordings of
people's voices, the callback signing secret and the prepared speech of named leads.

Folders are made 0700 and files 0600 as they are created (not by relying on the umask, which
is 0022 on most systems: world-readable). DATA_DIR itself is made 0700 at start-up, so even a
file an older version left 0644 inside it is out of other users' reach.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> Path:
    """`path` as a folder only its owner can enter; missing parents are created 0700 too."""
    missing = []
    folder = path
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
        folder.chmod(FOLDER_MODE)  # mkdir's mode is cut by the umask
    if path.stat().st_mode & 0o777 != FOLDER_MODE:
        path.chmod(FOLDER_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty and 0600 if it does not exist (e.g. before SQLite opens it: SQLite
    gives its -wal and -shm files the database file's mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    return path


def open_private(path: Path, mode: str = "wb"):
    """Open `path` for writing, creating it 0600 (truncated, like open(path, "wb"))."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    return os.fdopen(fd, mode)


def write_private(path: Path, data: bytes) -> None:
    """Write `path` atomically (a 0600 temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open_private(tmp) as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
