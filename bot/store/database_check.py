"""Opening the call-record store at start-up, with a failure told in one line.

A database that is down, refuses the password or does not exist is a setting to fix, not a
crash to debug: the server's supervisor checks it (and migrates) once before any worker
starts, the CLI commands before they read or dial, and each says `DATABASE_URL` and the
driver's own reason, never the password, in one line. Left to the workers, an unreachable
database made the supervisor restart them in a loop (the port accepting, then dropping
connections); left to SQLAlchemy, it printed a 54-line traceback.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sqlalchemy.engine import make_url

from bot.store import CallStore
from bot.store.engine import HEAD_REVISION, mask_url, normalize_database_url

CONNECT_TIMEOUT_SECS = 10.0  # a firewalled host answers nothing: don't wait for the OS's minutes
CHECK_TIMEOUT_SECS = 30.0  # connect, and migrate if needed


class DatabaseUnavailable(RuntimeError):
    """The store could not be opened; the message is one line, names DATABASE_URL, no password."""


async def open_store(url: str, *, migrate: bool = True, timeout_secs: float = 30.0) -> CallStore:
    """`CallStore.open`, bounded in time, raising DatabaseUnavailable on any failure;
    `timeout_secs` is the store's own bound on each operation (DATABASE_TIMEOUT_SECS)."""
    parsed = normalize_database_url(url)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["timeout"] = CONNECT_TIMEOUT_SECS
    try:
        return await asyncio.wait_for(
            CallStore.open(parsed, migrate=migrate, connect_args=connect_args, timeout_secs=timeout_secs),
            CHECK_TIMEOUT_SECS)
    except TimeoutError:
        raise DatabaseUnavailable(f"database at {mask_url(parsed)} (DATABASE_URL) did not answer within "
                                  f"{CHECK_TIMEOUT_SECS:g} s") from None
    except Exception as error:
        raise DatabaseUnavailable(describe(error, url)) from None


async def check_database(url: str, *, migrate_in_child: bool = False, log_level: str = "INFO") -> None:
    """Open (and migrate) the store once, then close it: DatabaseUnavailable if it can't be.

    `migrate_in_child`: a schema short of head is migrated by a short-lived child process, so
    the calling process (the server, which then serves calls) never loads Alembic and its
    templates (~10 MB of a worker's memory kept for the process's life); it logs at `log_level`."""
    if not migrate_in_child:
        store = await open_store(url, migrate=True)
        await store.close()
        return
    store = await open_store(url, migrate=False)
    try:
        at_head = await store.schema_revision_quick() == HEAD_REVISION
    finally:
        await store.close()
    if not at_head:
        await migrate_in_child_process(url, log_level)


async def migrate_in_child_process(url: str, log_level: str = "INFO") -> None:
    """Migrate the store to head in a fresh interpreter (spawned: nothing of this process is
    copied), raising its DatabaseUnavailable here."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            await asyncio.get_running_loop().run_in_executor(pool, _migrate_here, url, log_level)
        except BrokenProcessPool:
            raise DatabaseUnavailable(f"migrating the database at {mask_url(normalize_database_url(url))} "
                                      "(DATABASE_URL): the migrating process died") from None


def _migrate_here(url: str, log_level: str) -> None:
    """In the child: the migration, logging as the parent does."""
    from bot.config.logging_setup import setup_logging

    setup_logging(log_level)
    asyncio.run(check_database(url))


def describe(error: BaseException, url: str) -> str:
    """`cannot open the database at <masked URL> (DATABASE_URL): <root cause, first line>`."""
    root = error
    while True:  # SQLAlchemy wraps the driver's error (.orig), which may wrap the OS's (__cause__)
        inner = getattr(root, "orig", None) or root.__cause__
        if inner is None or inner is root:
            break
        root = inner
    reason = (str(root).strip().splitlines() or [""])[0].strip()
    reason = f"{type(root).__name__}: {reason}" if reason else type(root).__name__
    password = _password(url)
    if password:
        reason = reason.replace(password, "***")
    return f"cannot open the database at {mask_url(normalize_database_url(url))} (DATABASE_URL): {reason[:300]}"


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except Exception:
        return None
