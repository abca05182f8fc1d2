"""Which server process runs each live call, and closing the calls of processes that died.

A process that takes a call's media socket writes its id into the record (`claim_call`) and
shows it is alive by a heartbeat row in `server_workers` (`beat`). A process killed outright
(SIGKILL, out of memory, a machine lost) writes nothing more: its records would stay
`in-progress` for ever. `close_lost_calls` closes every record whose owner has not beaten for
`lost_after_secs`, with end_reason `worker_lost`. Any server may run it, any number at once:
it is one conditional UPDATE (on PostgreSQL over rows picked FOR UPDATE SKIP LOCKED, so two
sweeps never wait on each other), and a record is closed once.

Heartbeats and sweeps use the database's clock on PostgreSQL (several machines share it); a
SQLite file belongs to one machine, whose clock is used.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import case, delete, func, select, update

from bot.exotel.call_status import TERMINAL_CALL_STATUSES
from bot.store.models import CallRecord, ServerWorker, utcnow

LOST_END_REASON = "worker_lost"
LOST_SUMMARY = "the server process running the call stopped before it ended"


class CallOwnershipQueries:
    """Mixed into CallStore: needs its `is_sqlite`, `_write()` and `_upsert_call()`."""

    is_sqlite: bool

    def _db_now(self) -> Any:
        return utcnow() if self.is_sqlite else func.now()

    async def beat(self, owner_id: str, host: str | None = None, pid: int | None = None) -> None:
        """`owner_id` is alive now (its row is created on the first beat, or again if a sweep
        removed it while this process was stalled)."""
        async with self._write() as session:  # type: ignore[attr-defined]
            result = await session.execute(
                update(ServerWorker).where(ServerWorker.id == owner_id).values(heartbeat_at=self._db_now())
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 0:
                session.add(ServerWorker(id=owner_id, host=host, pid=pid, started_at=self._db_now(),
                                         heartbeat_at=self._db_now()))

    async def forget_owner(self, owner_id: str) -> None:
        """The process is stopping: no more heartbeats (anything it still owns is lost at once)."""
        async with self._write() as session:  # type: ignore[attr-defined]
            await session.execute(delete(ServerWorker).where(ServerWorker.id == owner_id))

    async def claim_call(self, call_sid: str, owner_id: str) -> None:
        """`owner_id` runs this call now: the record names it, and its status moves forward to
        in-progress (a terminal status stays). Creates the record of a call we never dialled."""
        forward = case((CallRecord.status.in_(("initiated", "ringing")), "in-progress"), else_=CallRecord.status)
        statement = (
            update(CallRecord).where(CallRecord.call_sid == call_sid)
            .values(owner_id=owner_id, status=forward, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        async with self._write() as session:  # type: ignore[attr-defined]
            if (await session.execute(statement)).rowcount:
                return

        def apply(row: CallRecord, _new: bool) -> bool:
            row.owner_id = owner_id
            if row.status in ("initiated", "ringing"):
                row.status = "in-progress"
            return True

        await self._upsert_call(call_sid, apply)  # type: ignore[attr-defined]

    async def close_lost_calls(self, lost_after_secs: float) -> list[str]:
        """Close the unfinished records whose owner has not beaten for `lost_after_secs`
        (status `completed`, end_reason `worker_lost`, outcome `error` unless one was set);
        forget those owners. Returns the Sids this call closed."""
        now = self._db_now()
        threshold = now - timedelta(seconds=lost_after_secs)
        alive = select(ServerWorker.id).where(ServerWorker.heartbeat_at >= threshold)
        lost = (
            CallRecord.owner_id.is_not(None),
            CallRecord.status.not_in(sorted(TERMINAL_CALL_STATUSES)),
            CallRecord.owner_id.not_in(alive),
        )
        statement = update(CallRecord).where(*lost)
        if not self.is_sqlite:  # rows another sweep (or a live write) holds are left to it
            picked = select(CallRecord.call_sid).where(*lost).with_for_update(skip_locked=True)
            statement = statement.where(CallRecord.call_sid.in_(picked.scalar_subquery()))
        statement = statement.values(
            status="completed",
            end_reason=LOST_END_REASON,
            outcome=func.coalesce(CallRecord.outcome, "error"),
            summary=func.coalesce(CallRecord.summary, LOST_SUMMARY),
            ended_at=now,
            updated_at=now,
        ).returning(CallRecord.call_sid).execution_options(synchronize_session=False)
        async with self._write() as session:  # type: ignore[attr-defined]
            closed = list((await session.execute(statement)).scalars())
            await session.execute(delete(ServerWorker).where(ServerWorker.heartbeat_at < threshold))
        return closed
