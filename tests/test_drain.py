"""A stopped server drains: live calls run to their natural end while /health says draining
and new media sockets are refused; after SHUTDOWN_GRACE_SECS the calls still running hear the
apology and are closed cleanly. In every mode: WORKERS=2 (the supervisor keeps handing health
checks to draining workers), WORKERS=1, and the in-process server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time

import httpx

from bot.config.settings import load_settings
from bot.server.local_server import free_port, serve_locally
from bot.simulator.caller_speech import resample_pcm, speak
from bot.simulator.exotel_emulator import EmulatorConfig, EmulatorResult, ExotelEmulator, HangUp, Reply
from testing.server_process import ServerProcess, server_process


def _record(database, call_sid: str) -> tuple | None:
    with sqlite3.connect(database) as db:
        return db.execute("select status, end_reason, outcome, owner_id, transcript from call_records "
                          "where call_sid = ?", (call_sid,)).fetchone()


async def _until(condition, what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what} (waited {within:.0f} s)"
        await asyncio.sleep(0.1)


async def _wait_until_live(server: ServerProcess, caller: ExotelEmulator, running: asyncio.Task,
                           greeted: bool) -> None:
    """The call is running on a worker (claimed), and with `greeted` the greeting has played
    (its mark came back)."""
    def ready() -> bool:
        assert not running.done(), f"the call ended early: {running.result()}"
        row = _record(server.log_path.parent / "calls.db", caller.config.call_sid)
        return row is not None and row[3] is not None and (bool(caller.result.marks_echoed) or not greeted)

    await _until(ready, "the call never got going")


async def _draining_is_visible(server_url: str, ws_url: str) -> None:
    """/health answers 503 "draining" and a new media socket is refused with 503."""
    async with httpx.AsyncClient(timeout=5) as client:
        deadline = time.monotonic() + 20
        while True:
            response = await client.get(f"{server_url}/health")
            if response.status_code == 503:
                break
            assert time.monotonic() < deadline, f"/health never said draining: {response.status_code} {response.text}"
            await asyncio.sleep(0.1)
    assert response.json()["status"] == "draining" and response.json()["live_calls"] >= 0
    late = await ExotelEmulator(EmulatorConfig(url=ws_url, call_sid="CA-late", open_timeout=5)).run([HangUp(at=1)])
    assert late.connect_error and "503" in late.connect_error, late.connect_error


def _heard_after(result: EmulatorResult, since: float) -> str:
    """What pocketsphinx recognises in the bot audio the caller heard from `since` (monotonic)."""
    from pocketsphinx import Decoder

    pcm = b"".join(segment.pcm for segment in result.segments if segment.start >= since)
    decoder = Decoder(samprate=16000, logfn="/dev/null")
    decoder.start_utt()
    decoder.process_raw(resample_pcm(pcm, 8000, 16000), full_utt=True)
    decoder.end_utt()
    return decoder.hyp().hypstr if decoder.hyp() else ""


def _assert_all_gone(server: ServerProcess) -> None:
    for pid in server.worker_pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"worker {pid} still running after the server exited")


def test_sigterm_lets_a_live_call_finish_while_the_server_says_draining(tmp_path):
    """WORKERS=2: SIGTERM mid-call; the caller keeps talking and the bot keeps answering until
    the caller hangs up; meanwhile /health says draining and a new call is refused; then the
    server exits 0 with the record final."""
    line = speak("My name is Rahul and I want a two bedroom flat in Pune.")
    with server_process(tmp_path, 2, SHUTDOWN_GRACE_SECS="120") as server:
        caller = ExotelEmulator(EmulatorConfig(url=server.ws_url, call_sid="CA-drain", max_secs=60))

        async def scenario() -> tuple[float, EmulatorResult]:
            # The caller answers the greeting (after SIGTERM) and hangs up well after the bot's reply.
            running = asyncio.create_task(caller.run([Reply(pcm=line, text="my name is Rahul"), HangUp(at=35.0)]))
            try:
                await _wait_until_live(server, caller, running, greeted=False)
                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                await _draining_is_visible(server.url, server.ws_url)
                assert not running.done(), "the live call is still on"
                return signalled, await asyncio.wait_for(running, 60)
            finally:
                running.cancel()

        signalled, result = asyncio.run(scenario())
        assert server.process.wait(timeout=60) == 0, server.log()[-3000:]
    assert result.closed_by == "emulator", "the caller hung up: the server did not cut the call"
    assert result.violations == [] and result.close_code != 1012
    said_at = next(t for t, kind, _ in result.events if kind == "caller_said")
    assert result.started_at + said_at > signalled, "the caller spoke after SIGTERM"
    assert [t for t in result.media_at if t > said_at + 1.0], "and the bot answered"
    status, end_reason, _, _, transcript = _record(tmp_path / "calls.db", "CA-drain")
    assert (status, end_reason) == ("completed", "caller_hangup")
    assert any(entry["role"] == "user" for entry in json.loads(transcript)), "the caller's line is in the record"
    _assert_all_gone(server)


def test_after_the_grace_the_caller_hears_the_apology_then_a_clean_close(tmp_path):
    """WORKERS=1, SHUTDOWN_GRACE_SECS=2, a caller who stays on the line: after the grace the bot
    says the campaign's apology, then closes the socket normally once it has played."""
    with server_process(tmp_path, 1, SHUTDOWN_GRACE_SECS="2") as server:
        caller = ExotelEmulator(EmulatorConfig(url=server.ws_url, call_sid="CA-grace", max_secs=60))

        async def scenario() -> tuple[float, EmulatorResult]:
            running = asyncio.create_task(caller.run([]))
            try:
                await _wait_until_live(server, caller, running, greeted=True)
                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                await _draining_is_visible(server.url, server.ws_url)
                return signalled, await asyncio.wait_for(running, 60)
            finally:
                running.cancel()

        signalled, result = asyncio.run(scenario())
        # uvicorn ends a process it served in by re-raising the signal it was stopped with.
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM), server.log()[-3000:]
        assert "1012" not in server.log()
    assert result.closed_by == "server" and result.close_code == 1000, (result.closed_by, result.close_code)
    assert result.violations == [], "the apology played to its end before the close"
    assert result.closed_at is not None and result.started_at + result.closed_at > signalled + 2.0
    heard = _heard_after(result, signalled + 1.0)
    assert "problem" in heard or "sorry" in heard, heard
    status, end_reason, outcome, _, _ = _record(tmp_path / "calls.db", "CA-grace")
    assert (status, end_reason, outcome) == ("completed", "server_shutdown", "no_outcome")


async def test_the_in_process_server_drains_before_it_stops(tmp_path):
    """serve_locally's stop drains too: a live call runs on to the caller's hang-up."""
    settings = load_settings(_env_file=None, port=free_port(), host="127.0.0.1", data_dir=tmp_path)
    caller = None
    async with serve_locally(settings) as server:
        caller = ExotelEmulator(EmulatorConfig(url=server.ws_url, call_sid="CA-local", max_secs=30))
        running = asyncio.create_task(caller.run([HangUp(at=6.0)]))
        await _until(lambda: "CA-local" in server.app.state.services.live_calls, "the call never started")
        stopping_at = time.monotonic()
    result = await asyncio.wait_for(running, 30)
    assert result.closed_by == "emulator" and result.violations == []
    assert result.closed_at is not None and result.started_at + result.closed_at > stopping_at
    assert server.app.state.services.call_sink.get("CA-local").end_reason == "caller_hangup"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_workers_whose_supervisor_was_killed_finish_and_exit(tmp_path):
    """The supervisor killed outright (SIGKILL, OOM): its workers get no more connections. Each
    finishes its live calls and exits, instead of lingering orphaned (or spinning on the closed
    channel)."""
    with server_process(tmp_path, workers=2) as server:
        workers = set(server.worker_pids)
        server.process.kill()
        server.process.wait(timeout=10)
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, f"workers {[p for p in workers if _alive(p)]} still running " \
                                                f"60 s after their supervisor was killed:\n{server.log()[-2000:]}"
            time.sleep(0.2)
    assert "the supervisor is gone" in server.log()
