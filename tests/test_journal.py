"""The record journal (bot/store/journal.py): private, atomic, bounded files that several
processes replay safely; and `DurableRecords` replaying them idempotently into the store."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.exotel.callbacks import StatusUpdate
from bot.store import CallStore, call_to_dict
from bot.store.durable import DurableRecords, RecordNotSaved, session_args, status_args
from bot.store.journal import Journal, JournalFull

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, timeout: float = 60) -> str:
    """Run `code` in a fresh interpreter (another process of the machine); its stdout."""
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    return out


def test_entries_are_private_atomic_and_oldest_first(tmp_path):
    folder = tmp_path / "journal"
    journal = Journal(folder)
    first = journal.add("dialled", "CA-1", {"lead": {"phone": "+919876543210"}})
    second = journal.add("complete", "CA/../2", {"x": 1})
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    assert journal.pending() == [first.name, second.name], "oldest first"
    assert "/" not in second.name and ".." not in second.name, "a hostile Sid stays out of the path"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no temp file left"
    assert json.loads((folder / first.name).read_text())["args"]["lead"]["phone"] == "+919876543210"
    assert journal.find("dialled", "CA-1") == {"lead": {"phone": "+919876543210"}}
    assert journal.find("dialled", "CA/../2") is None and journal.find("complete", "CA/../2") == {"x": 1}


def test_an_existing_folder_is_made_private(tmp_path):
    folder = tmp_path / "journal"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    Journal(folder).add("status", "CA-1", {})
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_several_processes_replaying_at_once_take_each_entry_once(tmp_path):
    folder = tmp_path / "journal"
    journal = Journal(folder)
    names = {journal.add("status", f"CA-{i}", {"i": i}).name for i in range(60)}
    claimer = (
        "import json\n"
        "from bot.store.journal import Journal\n"
        f"j = Journal({str(folder)!r})\n"
        "taken = []\n"
        "for name in j.pending():\n"
        "    entry = j.claim(name)\n"
        "    if entry is not None:\n"
        "        taken.append(name)\n"
        "        j.done(entry)\n"
        "print(json.dumps(taken))\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", claimer], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        outputs = [p.communicate(timeout=60) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in processes), [err for _, err in outputs]
    taken = [name for out, _ in outputs for name in json.loads(out)]
    assert sorted(taken) == sorted(names), "every entry taken exactly once"
    assert journal.usage() == (0, 0)


def test_claims_of_a_process_that_died_are_replayed(tmp_path):
    folder = tmp_path / "journal"
    run_python(
        "import os\n"
        "from bot.store.journal import Journal\n"
        f"Journal({str(folder)!r}).add('complete', 'CA-dead', {{'a': 1}}, held=True)\n"
        "os._exit(0)\n"  # killed while its write was still trying the database
    )
    journal = Journal(folder)
    assert journal.pending() == [] and journal.usage()[0] == 1, "held by the dead process"
    mine = journal.add("complete", "CA-mine", {}, held=True)
    assert journal.recover() == 1
    assert [journal.claim(n).call_sid for n in journal.pending()] == ["CA-dead"]
    assert mine.path.exists(), "a live holder keeps its claim"

    restarted = Journal(folder)  # the same process, a new app instance after the old one closed
    held = restarted.add("complete", "CA-old-instance", {}, held=True)
    restarted.close()
    assert Journal(folder).recover() >= 1 and not held.path.exists()
    assert any("CA-old-instance" in n for n in Journal(folder).pending())


def test_a_claim_older_than_its_lease_is_taken_back(tmp_path):
    folder = tmp_path / "journal"
    holder = Journal(folder)
    entry = holder.add("status", "CA-1", {}, held=True)
    old = time.time() - 3600
    os.utime(entry.path, (old, old))
    assert Journal(folder, lease_secs=600).recover() == 1
    assert holder.pending() == [entry.name]


def test_the_journal_is_bounded(tmp_path):
    journal = Journal(tmp_path / "journal", max_entries=2)
    journal.add("status", "CA-1", {})
    journal.add("status", "CA-2", {})
    with pytest.raises(JournalFull):
        journal.add("status", "CA-3", {})
    small = Journal(tmp_path / "small", max_bytes=1024)
    small.add("status", "CA-1", {"t": "x" * 400})
    with pytest.raises(JournalFull):
        small.add("status", "CA-2", {"t": "x" * 800})


def test_an_unreadable_entry_is_set_aside(tmp_path):
    journal = Journal(tmp_path / "journal")
    journal.ensure_folder()
    (journal.folder / "00000000000000000001-status-CA1-abcd.json").write_text("{not json")
    assert journal.claim("00000000000000000001-status-CA1-abcd.json") is None
    assert journal.pending() == [] and (journal.folder / "rejected").is_dir()


# --- DurableRecords against a real SQLite file -------------------------------------------------


@pytest.fixture
async def store(tmp_path):
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", migrate=True, timeout_secs=0.3)
    try:
        yield store
    finally:
        await store.close()


def finished_session(call_sid: str) -> SimpleNamespace:
    start = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    return SimpleNamespace(
        call_sid=call_sid, campaign="real_estate", lead={"name": "Asha"}, to_number=None, from_number=None,
        outcome="interested", summary="wants 2BHK", end_reason="bot_hangup",
        transcript=[{"role": "assistant", "text": "Hello Asha", "t": 0.1}, {"role": "user", "text": "Hi", "t": 2.0}],
        collected={"bhk": 2}, metrics={"v2v_p50": 0.8, "bad": float("nan")}, turns=[{"turn": 1}], escalated=False,
        started_at=start, ended_at=start + timedelta(seconds=90), recording_path=None,
    )


def fill_journal(journal: Journal, call_sid: str) -> None:
    at = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    journal.add("dialled", call_sid, {"call_sid": call_sid, "campaign": "real_estate",
                                      "lead": {"id": "L-1", "name": "Asha"}, "to_number": "+919876543210",
                                      "custom_field": "{}", "attempt": 1, "from_number": None,
                                      "status": "initiated", "error": None})
    journal.add("status", call_sid, status_args(StatusUpdate(call_sid, "in-progress", at=at)))
    journal.add("complete", call_sid, session_args(finished_session(call_sid)))
    journal.add("status", call_sid, status_args(StatusUpdate(call_sid, "completed", duration_secs=91.0,
                                                             at=at + timedelta(seconds=91))))


async def test_replaying_twice_gives_the_same_record_and_never_rolls_back(tmp_path, store):
    journal = Journal(tmp_path / "journal")
    records = DurableRecords(store, journal, retry_secs=0.5, timeout_secs=0.3, replay_secs=0.1)
    completed = []
    records.on_completed = completed.append
    fill_journal(journal, "CA-1")
    assert await records.replay_once() == 4
    first = await store.find_call("CA-1")
    # A crash between the commit and the delete replays everything again, late `ringing` too.
    fill_journal(journal, "CA-1")
    journal.add("status", "CA-1", status_args(StatusUpdate("CA-1", "ringing")))
    assert await records.replay_once() == 5
    again = await store.find_call("CA-1")
    await records.stop()

    assert journal.usage() == (0, 0)
    assert call_to_dict(again) == call_to_dict(first)
    assert again.updated_at == first.updated_at, "the second replay changed nothing"
    assert first.status == "completed" and first.outcome == "interested" and first.duration_secs == 91.0
    assert first.lead == {"id": "L-1", "name": "Asha"} and first.to_number == "+919876543210"
    assert first.transcript[1]["text"] == "Hi" and first.metrics == {"v2v_p50": 0.8, "bad": None}
    assert first.started_at.isoformat().startswith("2026-01-05T10:00") and first.end_reason == "bot_hangup"
    assert [r.call_sid for r in completed] == ["CA-1", "CA-1"], "the campaign hears of each replayed record"


async def test_writes_wait_in_the_journal_while_the_file_is_locked(tmp_path, store):
    journal = Journal(tmp_path / "journal")
    records = DurableRecords(store, journal, retry_secs=0.5, timeout_secs=0.3, replay_secs=0.1)
    lock = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        spooled = await asyncio.wait_for(records.complete_from_session(finished_session("CA-2")), timeout=20)
        status = await asyncio.wait_for(records.apply_status(StatusUpdate("CA-2", "completed")), timeout=20)
        assert await records.replay_once() == 0, "nothing is written while the lock holds"
        waiting = journal.pending()
    finally:
        lock.rollback()
        lock.close()
    assert await records.replay_once() == 2
    record = await store.find_call("CA-2")
    await records.stop()
    assert spooled is None and status is None and len(waiting) == 2
    assert record.status == "completed" and record.outcome == "interested" and journal.usage() == (0, 0)


async def test_a_write_refused_for_another_reason_is_set_aside_not_retried(tmp_path, store):
    journal = Journal(tmp_path / "journal")
    records = DurableRecords(store, journal, retry_secs=0.5, timeout_secs=0.3, replay_secs=0.1)
    journal.add("no-such-op", "CA-3", {})
    assert await records.replay_once() == 0
    await records.stop()
    assert journal.pending() == [] and len(list((journal.folder / "rejected").iterdir())) == 1


async def test_neither_database_nor_journal_is_an_error(tmp_path, store):
    journal = Journal(tmp_path / "journal", max_entries=1)
    journal.add("status", "CA-0", {})
    records = DurableRecords(store, journal, retry_secs=0.2, timeout_secs=0.3, replay_secs=0.1)
    lock = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RecordNotSaved):
            await asyncio.wait_for(records.apply_status(StatusUpdate("CA-4", "ringing")), timeout=20)
    finally:
        lock.rollback()
        lock.close()
        journal.close()


async def test_the_store_timeout_bounds_a_locked_write(tmp_path, store):
    """DATABASE_TIMEOUT_SECS reaches SQLite's busy timeout: a locked file fails the write after
    it (0.3 s here), not after the 30 s default."""
    lock = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(Exception, match="database is locked"):
            await asyncio.wait_for(store.apply_status(StatusUpdate("CA-5", "ringing")), timeout=10)
    finally:
        lock.rollback()
        lock.close()


async def test_progress_saves_are_skipped_not_queued_while_the_database_is_down(tmp_path, store):
    records = DurableRecords(store, Journal(tmp_path / "journal"), retry_secs=0.5, timeout_secs=0.3,
                             replay_secs=0.5)
    await store.record_dialled("CA-6", "real_estate", {}, None)
    lock = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        first = await asyncio.wait_for(records.save_progress("CA-6", [], {}), timeout=20)
        tried = time.monotonic() - started
        started = time.monotonic()
        rest = await asyncio.wait_for(
            asyncio.gather(*(records.save_progress("CA-6", [], {}) for _ in range(50))), timeout=20)
        skipped = time.monotonic() - started
    finally:
        lock.rollback()
        lock.close()
    await asyncio.sleep(0.6)  # past the pause: the next save probes the database again
    probe = await records.save_progress("CA-6", [{"role": "user", "text": "hi"}], {})
    record = await store.find_call("CA-6")
    await records.stop()
    assert first is False and rest == [False] * 50
    assert skipped < tried / 3, f"50 skipped saves took {skipped:.3f} s, one real try {tried:.3f} s"
    assert probe is True and record.transcript == [{"role": "user", "text": "hi"}]
