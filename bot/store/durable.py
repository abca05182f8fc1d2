"""Call-record writes that outlive a database outage.

A call must never fail, and its record must never be lost, because the database is slow,
locked or down. `DurableRecords` sits between the call path and `CallStore`:

* Every write (a call's final record, a dialled call, a status callback) is first put in the
  journal (`bot.store.journal`, held by this process), then tried against the database with
  exponential backoff for DATABASE_RETRY_SECS by a task of its own; on commit the entry is
  deleted, else handed to the replayers. A crash meanwhile leaves the entry on disk: the next
  start-up replays it. The caller waits for the outcome (the final record), or a few seconds
  at most (`POST /calls`; a status callback, which Exotel wants answered within 15 s): by then
  the write is on disk whatever the database does. Only if the journal refuses it too (full,
  unwritable) is the write `RecordNotSaved` (a status callback then answers 503: Exotel retries).
* Live progress saves are skippable (the final record carries everything): one attempt each,
  and while the database is known to be down only one at a time (a probe), so they never
  pile up.
* The lead lookup at call start waits at most LEAD_LOOKUP_TIMEOUT_SECS, then looks in the
  journal (a dial the database didn't take yet), then leaves it to the stream's parameters.
* A replayer (one task per process) replays the journal at start-up and every
  JOURNAL_REPLAY_SECS while it holds entries. Every operation is idempotent and only moves a
  record forward (statuses only advance in the store), so a replay that runs twice, or after
  a newer write, changes nothing.

A write the database refuses for another reason than an outage (a constraint, a bug) is not
retried: its entry goes to the journal's rejected/ folder with an error in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeVar

from loguru import logger
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot.config.utc import as_utc
from bot.exotel.call_status import TERMINAL_CALL_STATUSES
from bot.exotel.callback_refs import ref_matches
from bot.exotel.callbacks import StatusUpdate
from bot.store.call_store import CallStore
from bot.store.calls import CallbackNotForThisCall, KnownCall
from bot.store.journal import Journal, JournalEntry
from bot.store.record_json import jsonable

T = TypeVar("T")
STATUS_WAIT_SECS = 5.0  # Exotel waits 15 s for the answer to a status callback
DIAL_WAIT_SECS = 5.0  # `POST /calls` answers with the Sid within this (the record is on disk)
# The dialler stores a call right after Exotel's REST answer gives it the Sid; a call that fails
# at once can have its status callback here first. The callback is held this long for the record.
CALLBACK_RECORD_WAIT_SECS = 5.0
BACKOFF_FIRST_SECS = 0.05
BACKOFF_MAX_SECS = 2.0
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "40")  # connection, resources, operator, rollback
_SESSION_FIELDS = ("call_sid", "campaign", "lead", "to_number", "from_number", "outcome", "summary",
                   "end_reason", "transcript", "collected", "metrics", "turns", "escalated",
                   "started_at", "ended_at", "recording_path")
# What a status update's journal entry keeps: the fields the store applies (and `at`, added below).
_STATUS_FIELDS = ("call_sid", "status", "recording_url", "answered_by", "duration_secs")


class RecordNotSaved(Exception):
    """Neither the database nor the journal took the write (the journal is full or unwritable)."""


class RecordsUnavailable(Exception):
    """The store did not answer a read in time, and the journal could not answer it either."""


def is_outage(error: BaseException) -> bool:
    """True if the error says the database is unavailable (locked, unreachable, timing out,
    restarting) rather than that the write itself is wrong."""
    if isinstance(error, (OSError, TimeoutError, PoolTimeout, DisconnectionError, ConnectionError)):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated or isinstance(error, (OperationalError, InterfaceError)):
            return True
        error = error.orig or error
    sqlstate = str(getattr(error, "sqlstate", None) or getattr(error.__cause__, "sqlstate", None) or "")
    return sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES) or sqlstate == "55P03"


# --- the operations a journal entry can hold (the same code runs live and on replay) ----------


def session_args(session: Any) -> dict[str, Any]:
    """What `complete_from_session` reads of a finished call, as JSON (the end time fixed now)."""
    args = {name: getattr(session, name, None) for name in _SESSION_FIELDS}
    args["ended_at"] = as_utc(args["ended_at"]) or datetime.now(UTC)
    return jsonable(args)


def status_args(update: StatusUpdate, expected_ref: str | None = None) -> dict[str, Any]:
    args = {**{name: getattr(update, name) for name in _STATUS_FIELDS}, "at": as_utc(update.at) or datetime.now(UTC)}
    if expected_ref is not None:
        args["expected_ref"] = expected_ref
    return jsonable(args)


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


async def _apply(store: CallStore, op: str, args: dict[str, Any]) -> Any:
    if op == "complete":
        snapshot = SimpleNamespace(**{name: args.get(name) for name in _SESSION_FIELDS})
        snapshot.started_at, snapshot.ended_at = _when(args.get("started_at")), _when(args.get("ended_at"))
        return await store.complete_from_session(snapshot)
    if op == "dialled":
        return await store.record_dialled(**args)
    if op == "status":
        fields = {k: v for k, v in args.items() if k != "expected_ref"}
        return await store.apply_status(StatusUpdate(**{**fields, "at": _when(fields.get("at"))}),
                                        expected_ref=args.get("expected_ref"))
    raise ValueError(f"unknown journal operation {op!r}")


class DurableRecords:
    """The call-record writes of one process (see the module doc). `start()` the replayer
    after opening the store; `stop()` it before closing the store."""

    def __init__(self, store: CallStore, journal: Journal, *, retry_secs: float = 60.0,
                 timeout_secs: float = 30.0, replay_secs: float = 5.0, lookup_timeout_secs: float = 1.0):
        self.store = store
        self.journal = journal
        self._retry_secs = retry_secs
        self._attempt_timeout = 3 * timeout_secs + 1  # a backstop: the store's own timeouts come first
        self._replay_secs = replay_secs
        self._lookup_timeout = lookup_timeout_secs
        self._down_until = 0.0  # while in the future: the database was unavailable a moment ago
        self._probing = False
        self._replayer: asyncio.Task | None = None
        self._writes: set[asyncio.Task] = set()  # writes still trying the database
        self.on_completed: Callable[[Any], None] | None = None  # a final record committed (live or replayed)
        # a call's end may have been written (a terminal status, or the session's end), live or replayed:
        # the campaign jobs settle its lead (bot/jobs/call_ends.py)
        self.on_call_end_written: Callable[[str], None] | None = None

    @classmethod
    def for_settings(cls, store: CallStore, settings: Any) -> DurableRecords:
        journal = Journal(settings.journal_dir, max_entries=settings.journal_max_entries,
                          max_bytes=settings.journal_max_bytes,
                          lease_secs=max(600.0, 4 * (settings.database_retry_secs + settings.database_timeout_secs)))
        return cls(store, journal, retry_secs=settings.database_retry_secs,
                   timeout_secs=settings.database_timeout_secs, replay_secs=settings.journal_replay_secs,
                   lookup_timeout_secs=settings.lead_lookup_timeout_secs)

    # -- the call path -----------------------------------------------------------------------

    async def complete_from_session(self, session: Any) -> Any:
        """The final record: the committed row, or None when it was left to the journal."""
        return await self._write("complete", str(session.call_sid), session_args(session), wait_secs=None)

    async def record_dialled(self, call_sid: str, campaign: str | None, lead: dict[str, Any] | None,
                             to_number: str | None, custom_field: str | None = None, attempt: int = 1, *,
                             from_number: str | None = None, status: str = "initiated",
                             error: str | None = None) -> Any:
        """A call Exotel accepted: the row, or None when it is in the journal (still being tried)."""
        args = jsonable({"call_sid": call_sid, "campaign": campaign, "lead": dict(lead or {}),
                          "to_number": to_number, "custom_field": custom_field, "attempt": attempt,
                          "from_number": from_number, "status": status, "error": error})
        return await self._write("dialled", call_sid, args, wait_secs=DIAL_WAIT_SECS)

    async def apply_status(self, update: StatusUpdate, expected_ref: str | None = None) -> bool | None:
        """A status callback: changed or not, or None when it is in the journal (still being tried).
        `expected_ref`: the store checks, when it writes it, that the call was dialled with that
        ref (a callback taken while the store could not say; refused then, never applied)."""
        args = status_args(update, expected_ref)
        return await self._write("status", update.call_sid, args, wait_secs=STATUS_WAIT_SECS)

    async def save_progress(self, call_sid: str, transcript: list[dict[str, Any]], collected: dict[str, Any]) -> bool:
        """A live call's progress, if the database takes it now: True if it did. Skipped while
        the database is known to be down, except for one save at a time that probes it."""
        if self._down_until:
            if time.monotonic() < self._down_until or self._probing:
                return False
            self._probing = probe = True
        else:
            probe = False
        try:
            async with asyncio.timeout(self._attempt_timeout):
                await self.store.save_progress(call_sid, transcript, collected)
            self._down_until = 0.0
            return True
        except Exception as error:
            if is_outage(error):
                self._mark_down()
            logger.bind(call_sid=call_sid).warning(f"call progress not saved (the final record will carry it): "
                                                   f"{_short(error)}")
            return False
        finally:
            if probe:
                self._probing = False

    async def find_lead(self, call_sid: str) -> tuple[str | None, dict[str, Any]] | None:
        """(campaign, lead) of a dialled call: from the store if it answers in time, else from a
        dial still in the journal; None if neither knows the call."""
        log = logger.bind(call_sid=call_sid)
        found = None
        try:
            async with asyncio.timeout(self._lookup_timeout):
                found = await self.store.lead_for_call(call_sid)
        except Exception as error:
            if is_outage(error):
                self._mark_down()
            log.warning(f"lead lookup: the store did not answer ({_short(error)}); trying the journal")
        if found:
            return found
        try:
            dialled = await asyncio.to_thread(self.journal.find, "dialled", call_sid)
        except OSError as error:
            log.warning(f"lead lookup: journal unreadable ({error})")
            return None
        if dialled:
            return dialled.get("campaign"), dict(dialled.get("lead") or {})
        return None

    async def call_for_media(self, call_sid: str) -> KnownCall | None:
        """What a starting media session needs (campaign, lead, whether the call already ended):
        from the store if it answers in time and knows the call, else from a dial still in
        the journal."""
        try:
            async with asyncio.timeout(self._lookup_timeout):
                known = await self.store.call_for_media(call_sid)
            if known is not None:
                return known
        except Exception as error:
            if is_outage(error):
                self._mark_down()
            logger.bind(call_sid=call_sid).warning(
                f"call lookup: the store did not answer ({_short(error)}); trying the journal")
        dialled = await self._journalled_dial(call_sid)
        if dialled is None:
            return None
        return KnownCall(dialled.get("campaign"), dict(dialled.get("lead") or {}), ended=False)

    async def dial_custom_field(self, call_sid: str, wait_secs: float) -> str | None:
        """The CustomField a call we placed was dialled with, from the store (waiting up to
        `wait_secs` for a dial still being stored) or from a dial still in the journal. None:
        we did not place this call. RecordsUnavailable: the store could not say, and the
        journal has no such dial."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_secs
        while True:
            unavailable = False
            try:
                async with asyncio.timeout(self._lookup_timeout):
                    record = await self.store.find_call(call_sid)
                if record is not None:
                    return record.custom_field or ""
            except Exception as error:
                if not is_outage(error) and not isinstance(error, TimeoutError):
                    raise
                self._mark_down()
                unavailable = True
            dialled = await self._journalled_dial(call_sid)  # a dial the database has not taken yet
            if dialled is not None:
                return str(dialled.get("custom_field") or "")
            if loop.time() >= deadline:
                if unavailable:
                    raise RecordsUnavailable(f"the store did not answer for {call_sid}")
                return None
            await asyncio.sleep(0.25)

    async def journalled_custom_field(self, call_sid: str) -> str | None:
        """The CustomField of a dial the journal still holds (not yet in the database), if any."""
        dialled = await self._journalled_dial(call_sid)
        return None if dialled is None else str(dialled.get("custom_field") or "")

    async def _journalled_dial(self, call_sid: str) -> dict[str, Any] | None:
        try:
            return await asyncio.to_thread(self.journal.find, "dialled", call_sid)
        except OSError as error:
            logger.bind(call_sid=call_sid).warning(f"journal unreadable ({error})")
            return None

    async def apply_callback(self, update: StatusUpdate, ref: str) -> bool | None:
        """Apply a status callback that came to the address signed for dial `ref`: only to the
        call dialled with that ref (bot/exotel/callback_refs.py), else CallbackNotForThisCall
        and nothing changes. Returns as `apply_status` does.

        The call's record must exist: one still being stored (or still in the journal) is
        waited for, up to CALLBACK_RECORD_WAIT_SECS. While the store can't say, the update is
        journalled and the store checks the ref when it writes it (in the write's own
        transaction). RecordNotSaved: neither the database nor the journal took it."""
        wait_secs = CALLBACK_RECORD_WAIT_SECS
        try:
            if not ref_matches(await self.dial_custom_field(update.call_sid, wait_secs), ref):
                raise CallbackNotForThisCall(f"the callback's address was not issued for {update.call_sid}")
        except RecordsUnavailable:
            pass  # the store can't say now; it checks the ref when it writes the update (journal replay)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_secs
        last_try = False
        while True:
            try:
                return await self.apply_status(update, expected_ref=ref)
            except CallbackNotForThisCall:
                # A dial the journal still holds (the database just came back and the journal is
                # being replayed) has no row yet, so the store can't match the ref: wait for it.
                if last_try or loop.time() >= deadline:
                    raise
                if ref_matches(await self.journalled_custom_field(update.call_sid), ref):
                    await asyncio.sleep(0.25)  # the dial is still on its way to the database
                else:
                    last_try = True  # gone from the journal: in the database now, or never there

    # -- writing -------------------------------------------------------------------------------

    async def _write(self, op: str, call_sid: str, args: dict[str, Any], *, wait_secs: float | None) -> Any:
        """Journal the write, then let a task of its own put it in the database; wait for that
        task's outcome, or `wait_secs` at most (the write is on disk by then)."""
        entry = await self._spool(op, call_sid, args, held=True)
        task = asyncio.create_task(self._persist(op, call_sid, args, entry))
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        done, _ = await asyncio.wait({task}, timeout=wait_secs)  # the caller's cancellation spares the task
        if task in done:
            return task.result()
        if entry is None:
            raise RecordNotSaved(f"{op} record of {call_sid}: the database is slow to answer and the journal "
                                 "refused it")
        return None

    async def _persist(self, op: str, call_sid: str, args: dict[str, Any], entry: JournalEntry | None) -> Any:
        """Try the database with backoff for DATABASE_RETRY_SECS; then leave the write to the replayers."""
        log = logger.bind(call_sid=call_sid)
        deadline = time.monotonic() + self._retry_secs
        delay = BACKOFF_FIRST_SECS
        last_error: BaseException | None = None
        try:
            while True:
                try:
                    result = await self._attempt(op, args)
                except CallbackNotForThisCall:  # refused for what it is: the caller answers 403
                    if entry is not None:
                        await asyncio.to_thread(self.journal.done, entry)
                    raise
                except Exception as error:
                    if not is_outage(error):
                        log.error(f"the database refused the {op} record: {_short(error)}")
                        if entry is None:
                            raise
                        await asyncio.to_thread(self.journal.reject, entry)
                        return None
                    last_error = error
                    self._mark_down()
                    pause = delay * random.uniform(0.8, 1.2)
                    if time.monotonic() + pause > deadline:
                        break
                    await asyncio.sleep(pause)
                    delay = min(delay * 2, BACKOFF_MAX_SECS)
                    continue
                if entry is not None:
                    await asyncio.to_thread(self.journal.done, entry)
                self._committed(op, result)
                self._call_end_written(op, call_sid, args)
                return result
            if entry is not None:
                await asyncio.to_thread(self.journal.release, entry)
            else:
                entry = await self._spool(op, call_sid, args, held=False)
            if entry is None:
                log.error(f"{op} record LOST: the database is unavailable ({_short(last_error)}) "
                          "and the journal refused it")
                raise RecordNotSaved(f"{op} record of {call_sid} not saved: database unavailable "
                                     f"({_short(last_error)}) and the journal refused it")
            count, size = await asyncio.to_thread(self.journal.usage)
            log.warning(f"database unavailable ({_short(last_error)}): {op} record kept in the journal "
                        f"for replay ({count} entries, {size} bytes waiting)")
            return None
        except asyncio.CancelledError:  # shutting down: whoever replays next writes it
            if entry is not None:
                self.journal.release(entry)
            raise

    def _write_done(self, task: asyncio.Task) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: a caller that stopped waiting never sees it (it is logged)

    async def _attempt(self, op: str, args: dict[str, Any]) -> Any:
        async with asyncio.timeout(self._attempt_timeout):
            return await _apply(self.store, op, args)

    async def _spool(self, op: str, call_sid: str, args: dict[str, Any], *, held: bool) -> JournalEntry | None:
        try:
            entry = await asyncio.to_thread(self.journal.add, op, call_sid, args, held=held)
        except OSError as error:  # JournalFull is one
            logger.bind(call_sid=call_sid).error(f"JOURNAL REFUSED the {op} record: {error}")
            return None
        count, size = await asyncio.to_thread(self.journal.usage)
        if count * 2 > self.journal.max_entries or size * 2 > self.journal.max_bytes:
            logger.error(f"the journal is over half full ({count} entries, {size} bytes): "
                         "the database has not taken writes for a long time")
        return entry

    def _committed(self, op: str, result: Any) -> None:
        self._down_until = 0.0
        if op == "complete" and self.on_completed is not None:
            try:
                self.on_completed(result)
            except Exception as error:
                logger.bind(call_sid=getattr(result, "call_sid", None)).warning(f"on_completed failed: {error}")

    def _call_end_written(self, op: str, call_sid: str, args: dict[str, Any]) -> None:
        ended = op == "complete" or (op == "status" and args.get("status") in TERMINAL_CALL_STATUSES)
        if ended and self.on_call_end_written is not None:
            try:
                self.on_call_end_written(call_sid)
            except Exception as error:
                logger.bind(call_sid=call_sid).warning(f"on_call_end_written failed: {error}")

    def _mark_down(self) -> None:
        self._down_until = time.monotonic() + self._replay_secs

    # -- replaying -------------------------------------------------------------------------------

    def start(self) -> None:
        """Replay the journal now (start-up) and every JOURNAL_REPLAY_SECS after."""
        if self._replayer is None:
            self._replayer = asyncio.create_task(self._replay_forever(), name="journal-replay")

    async def stop(self) -> None:
        """Stop replaying; writes still trying the database hand their entries to the next replayer."""
        for task in list(self._writes):
            task.cancel()
        if self._writes:
            await asyncio.wait(self._writes)
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
            self._replayer = None
        self.journal.close()

    async def _replay_forever(self) -> None:
        count, size = await asyncio.to_thread(self.journal.usage)
        if count:
            logger.warning(f"the journal holds {count} record writes ({size} bytes) not yet in the database: replaying")
        while True:
            try:
                await self.replay_once()
            except Exception:
                logger.exception("journal replay failed")
            await asyncio.sleep(self._replay_secs)

    async def replay_once(self) -> int:
        """Replay what the journal holds, oldest first; stop at the first sign of an outage.
        Returns how many entries were written."""
        await asyncio.to_thread(self.journal.recover)
        replayed = 0
        for name in await asyncio.to_thread(self.journal.pending):
            entry = await asyncio.to_thread(self.journal.claim, name)
            if entry is None:
                continue  # another process has it
            log = logger.bind(call_sid=entry.call_sid)
            try:
                result = await self._attempt(entry.op, entry.args)
            except asyncio.CancelledError:
                self.journal.release(entry)
                raise
            except CallbackNotForThisCall as error:
                log.warning(f"journal: status callback dropped: {error}")
                await asyncio.to_thread(self.journal.done, entry)
                continue
            except Exception as error:
                if not is_outage(error):
                    log.error(f"journal: the database refused the {entry.op} record ({_short(error)}); "
                              f"moved to {self.journal.folder / 'rejected'}")
                    await asyncio.to_thread(self.journal.reject, entry)
                    continue
                await asyncio.to_thread(self.journal.release, entry)
                self._mark_down()
                break
            await asyncio.to_thread(self.journal.done, entry)
            log.info(f"journal: {entry.op} record written (made {entry.created_at})")
            self._committed(entry.op, result)
            self._call_end_written(entry.op, entry.call_sid, entry.args)
            replayed += 1
        return replayed


async def retry_while_unavailable(operation: Callable[[], Awaitable[T]], what: str, *,
                                  first_secs: float = 0.5, most_secs: float = 30.0) -> T:
    """Run `operation` until the database answers it: outage errors are retried with backoff,
    with no end (for a job that cannot go on without the answer, e.g. a campaign's lead
    states; cancel it to stop); other errors are raised. One log line when the outage starts
    and one when it ends."""
    delay, failed_since = first_secs, None
    while True:
        try:
            result = await operation()
        except Exception as error:
            if not is_outage(error):
                raise
            if failed_since is None:
                failed_since = time.monotonic()
                logger.warning(f"database unavailable ({_short(error)}): retrying to {what}")
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, most_secs)
            continue
        if failed_since is not None:
            logger.info(f"database back after {time.monotonic() - failed_since:.1f} s: {what} done")
        return result


def _short(error: BaseException | None) -> str:
    """One line naming the error (drivers put the SQL and a URL on further lines)."""
    if error is None:
        return "no error"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__
