"""Hostile input: what comes off the wire or through the API never chooses a path, never
costs unbounded memory or CPU, never rings a phone it cannot record, never reaches another
call's record, and never leaks a secret or a live spreadsheet formula."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import websockets
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bot.config.lead_limits import MAX_DEPTH, LeadError, check_lead
from bot.config.settings import SettingsError, load_settings
from bot.server.local_server import LocalServer, free_port, serve_locally
from bot.server.media_handshake import MAX_OPENING_BYTES
from bot.simulator.exotel_emulator import EmulatorConfig, ExotelEmulator, HangUp
from bot.simulator.exotel_rest import FakeExotelREST
from bot.store import CallStore, call_to_dict
from bot.store.record_csv import calls_csv
from pipelines.speech_text import MAX_PIECE_CHARS, speech_pieces
from serializers.exotel_events import is_call_sid
from testing.dialling import EXOTEL
from testing.waiting import wait_finished

ROOT = Path(__file__).resolve().parent.parent
POLICY_VIOLATION = 1008


@asynccontextmanager
async def served(tmp_path: Path, **overrides) -> AsyncIterator[LocalServer]:
    """The real app, offline stand-ins, its own DATA_DIR under tmp_path."""
    settings = load_settings(_env_file=None, host="127.0.0.1", port=free_port(), data_dir=tmp_path / "data",
                             deepgram_api_key="", openai_api_key="", elevenlabs_api_key="", **overrides)
    async with serve_locally(settings) as server:
        yield server


# --- 1. identifiers from the wire never reach a path ----------------------------------------


@pytest.mark.parametrize("call_sid", ["../../escaped", "/tmp/{unique}", "a/b", "..", "x" * 65, "ok\nforged log line"])
async def test_a_call_sid_that_is_not_an_exotel_id_is_refused_and_writes_nothing(tmp_path, call_sid):
    call_sid = call_sid.format(unique=f"hostile-{uuid.uuid4().hex}")
    async with served(tmp_path) as server:
        emulator = ExotelEmulator(EmulatorConfig(url=server.ws_url, call_sid=call_sid,
                                                 custom_parameters={"campaign": "real_estate"}))
        result = await emulator.run([HangUp(at=3.0)])
        calls = await server.app.state.services.store.list_calls()
    assert result.close_code == POLICY_VIOLATION and result.closed_by == "server", result.events[-3:]
    assert result.payload_sizes == [], "no greeting for a stream that is not Exotel's"
    assert calls == [], "no record either"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".wav"]
    assert written == [] and not Path(f"{call_sid}.wav").exists() and not Path("/tmp", f"{Path(call_sid).name}.wav").exists()


async def test_an_exotel_shaped_call_sid_records_under_data_dir(tmp_path):
    async with served(tmp_path) as server:
        emulator = ExotelEmulator(EmulatorConfig(url=server.ws_url, call_sid="CA_1f2e-3d4c",
                                                 custom_parameters={"campaign": "real_estate"}))
        await emulator.run([HangUp(at=3.0)])
        session = await wait_finished(server, "CA_1f2e-3d4c")
    assert session.recording_path == str(tmp_path / "data" / "recordings" / "CA_1f2e-3d4c.wav")


@given(st.text(max_size=80))
def test_only_short_letter_digit_ids_are_call_sids(text):
    if is_call_sid(text):
        assert "/" not in text and "." not in text and "\\" not in text and 1 <= len(text) <= 64
        assert Path("recordings", f"{text}.wav").parent == Path("recordings")


# --- 2, 3. bounded leads, validated before the dial -----------------------------------------


def _nested(depth: int) -> dict:
    lead: dict = {"id": "L-1"}
    for _ in range(depth - 1):
        lead = {"x": lead}
    return lead


def test_lead_bounds():
    assert check_lead({"id": "L-1", "name": "Kavya", "city": {"area": {"block": "B"}}})
    assert check_lead(_nested(MAX_DEPTH))
    for bad, words in [({"name": "x" * 81}, "lead.name"), ({"id": "L" * 101}, "lead.id"),
                       (_nested(MAX_DEPTH + 1), "nested"), (_nested(900), "nested"),
                       ({"notes": "x" * 17_000}, "bytes"), ({"n": float("nan")}, "finite"),
                       ({"k" * 65: 1}, "key"), ([1, 2], "object")]:
        with pytest.raises(LeadError, match=words):
            check_lead(bad)


async def test_post_calls_refuses_unbounded_leads_before_exotel_is_asked_to_dial(tmp_path):
    huge_name = "Rahul" * 960  # 4.8 KB
    async with FakeExotelREST(account_sid="acme", api_key="key", api_token="token") as exotel:
        async with served(tmp_path, exotel_api_base_url=exotel.base_url, **EXOTEL) as server:
            async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
                answers = {
                    "long name": await client.post("/calls", json={"to": "9876543210", "lead": {"name": huge_name}}),
                    "deep 5": await client.post("/calls", json={"to": "9876543210", "lead": _nested(5)}),
                    "deep 900": await client.post(
                        "/calls", content='{"to": "9876543210", "lead": ' + '{"x": ' * 900 + "{}" + "}" * 901,
                        headers={"content-type": "application/json"}),
                    "deep 20000": await client.post(
                        "/calls", content='{"to": "9876543210", "lead": ' + "[" * 20_000 + "]" * 20_000 + "}",
                        headers={"content-type": "application/json"}),
                    "20 KB": await client.post("/calls", json={"to": "9876543210", "lead": {"notes": "x" * 20_000}}),
                    "1 MB body": await client.post("/calls", json={"to": "9876543210", "pad": "x" * 1_000_000}),
                    "bad number": await client.post("/calls", json={"to": "12345", "lead": {"name": "Kavya"}}),
                }
                listing = await client.get("/calls")
                placed = await client.post("/calls", json={"to": "9876543210", "lead": {"name": "Kavya", "id": "L-9"}})
    codes = {what: answer.status_code for what, answer in answers.items()}
    assert codes["deep 900"] in (400, 422), codes  # refused by our bound, or by the JSON parser's
    codes.pop("deep 900")
    assert codes == {"long name": 422, "deep 5": 422, "deep 20000": 400, "20 KB": 422,
                     "1 MB body": 413, "bad number": 422}, codes
    assert "lead.name is 4800 characters; at most 80" in answers["long name"].text
    assert listing.status_code == 200 and listing.json()["count"] == 0, "nothing stored, listings still work"
    assert placed.status_code == 200, placed.text
    assert len(exotel.calls) == 1, "only the valid request dialled"


def test_a_csv_row_with_an_unbounded_lead_is_a_bad_row(tmp_path):
    from bot.dialing.lead_files import read_leads

    path = tmp_path / "leads.csv"
    path.write_text(f"id,name,phone\nA,Asha,9876500001\nB,{'x' * 500},9876500002\n")
    leads, bad, _ = read_leads(path, frozenset())
    assert [lead.lead_id for lead in leads] == ["A"]
    assert [(row.line, "lead.name is 500 characters" in row.reason) for row in bad] == [(3, True)]


async def test_an_over_long_name_in_the_streams_parameters_is_not_spoken(tmp_path):
    async with served(tmp_path) as server:
        emulator = ExotelEmulator(EmulatorConfig(url=server.ws_url, custom_parameters={
            "campaign": "real_estate", "name": "Rahul " * 200}))
        result = await emulator.run([HangUp(at=4.0)])
        session = await wait_finished(server, emulator.config.call_sid)
    assert "name" not in session.lead
    assert result.violations == [] and result.payload_sizes, "the call goes on, greeting and all"
    assert session.transcript[0]["text"].startswith("Hello, this is"), session.transcript[0]


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab .,!?\n"), max_size=2000))
def test_speech_pieces_are_bounded_and_keep_every_word(text):
    pieces = speech_pieces(text)
    assert all(0 < len(piece) <= MAX_PIECE_CHARS for piece in pieces)
    assert "".join("".join(pieces).split()) == "".join(text.split())


def test_a_long_unpunctuated_line_is_synthesized_in_bounded_memory():
    """Piper's memory grows with the square of a sentence: a 1,200-character lead name as one
    sentence took 1.6 GB (4.8 KB: 11.6 GB). In pieces, a long line peaks no higher than a short one."""
    script = (
        "import resource\n"
        "from pipelines.providers.piper import synthesize_pcm\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
        "synthesize_pcm('en_US-joe-medium', 'Hello ' + ' '.join(['Rahulkumar'] * 18))\n"
        "short = peak()\n"
        "pcm, rate = synthesize_pcm('en_US-joe-medium', 'Hello ' + ' '.join(['Rahulkumar'] * 110))\n"
        "print(short, peak(), len(pcm) / 2 / rate)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    short_mb, long_mb, secs = (float(x) for x in done.stdout.split()[-3:])
    assert secs > 30, "the whole line was spoken"
    assert long_mb - short_mb < 150, f"peak grew {long_mb - short_mb:.0f} MB for a long line"


# --- 4. what a socket may send before `start` -----------------------------------------------


async def test_a_socket_that_floods_before_start_is_dropped(tmp_path):
    async with served(tmp_path, handshake_timeout_secs=60) as server:
        async with websockets.connect(server.ws_url, max_size=None) as flood:
            await flood.send(json.dumps({"event": "connected"}))
            sent = 0
            with pytest.raises(websockets.ConnectionClosed) as closed:
                for _ in range(40):  # 40 x 32 KB, far past the 256 KB bound
                    await flood.send("x" * 32 * 1024)
                    sent += 32 * 1024
                    await asyncio.sleep(0.01)
                await asyncio.wait_for(flood.recv(), timeout=30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == POLICY_VIOLATION
            assert sent >= MAX_OPENING_BYTES, "dropped for what it sent, not before"
        async with websockets.connect(server.ws_url, max_size=None) as big:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await big.send("x" * 2 * 1024 * 1024)
                await asyncio.wait_for(big.recv(), timeout=30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, "one 2 MB message: too big"
        assert server.app.state.services.live_calls == {}


# --- 5. a callback address is good for its own call only ------------------------------------


async def test_a_signed_callback_address_cannot_touch_another_call_or_create_one(tmp_path, monkeypatch):
    monkeypatch.setattr("bot.store.durable.CALLBACK_RECORD_WAIT_SECS", 0.5)
    async with FakeExotelREST(account_sid="acme", api_key="key", api_token="token",
                              outcomes=["busy", "no-answer"]) as exotel:
        async with served(tmp_path, exotel_api_base_url=exotel.base_url, **EXOTEL) as server:
            server.settings.public_base_url = server.http_url
            async with httpx.AsyncClient(base_url=server.http_url) as client:
                first = (await client.post("/calls", json={"to": "9876543210"})).json()["call_sid"]
                second = (await client.post("/calls", json={"to": "9876543211"})).json()["call_sid"]
                await exotel.drain()
                first_url = exotel.callbacks_for(first)[0].url
                before = (await client.get(f"/calls/{second}")).json()
                other_call = await client.post(first_url, json={"CallSid": second, "Status": "completed",
                                                               "RecordingUrl": "https://evil.example/x.mp3",
                                                               "AnsweredBy": "human"})
                unknown_call = await client.post(first_url, json={"CallSid": "CA-never-placed", "Status": "completed"})
                dialler = server.app.state.services.dialer
                never_issued = await client.post(dialler.status_callback_url("0123456789ab"),
                                                 json={"CallSid": "CA-never-placed-2", "Status": "completed"})
                own_call = await client.post(first_url, json={"CallSid": first, "Status": "busy",
                                                             "RecordingUrl": "https://exotel.example/r.mp3"})
                after = (await client.get(f"/calls/{second}")).json()
                ghosts = [(await client.get(f"/calls/{sid}")).status_code for sid in ("CA-never-placed", "CA-never-placed-2")]
                mine = (await client.get(f"/calls/{first}")).json()
    assert (other_call.status_code, unknown_call.status_code, never_issued.status_code) == (403, 403, 403)
    assert after == before, "the other call's record is untouched"
    assert ghosts == [404, 404], "no record made for calls we never placed"
    assert own_call.status_code == 200 and mine["recording"]["url"] == "https://exotel.example/r.mp3"


# --- 6. CSV cells are never live formulas ---------------------------------------------------


def test_the_csv_export_opens_as_a_sales_team_expects():
    """One column per collected detail, the lead's name and phone, the transcript as text."""
    rows = [
        {"call_sid": "CA1", "campaign": "real_estate", "status": "completed", "outcome": "interested",
         "summary": "2BHK", "started_at": None, "ended_at": None, "duration_secs": 60.0, "end_reason": "bot_hangup",
         "escalated": False, "lead": {"name": "Rahul"}, "to_number": "+919876543210",
         "collected": {"budget": "80 lakhs", "bhk": 2},
         "transcript": [{"role": "assistant", "text": "Hello Rahul"}, {"role": "user", "text": "Yes"}]},
        {"call_sid": "CA2", "campaign": "real_estate", "status": "completed", "outcome": "callback_requested",
         "summary": "", "started_at": None, "ended_at": None, "duration_secs": 20.0, "end_reason": "bot_hangup",
         "escalated": False, "lead": {"name": "Asha"}, "to_number": "+919876500000",
         "collected": {"callback_time": "Sunday"}, "transcript": []},
    ]
    table = list(csv.DictReader(io.StringIO(calls_csv(rows))))
    assert [r["collected.budget"] for r in table] == ["80 lakhs", ""]
    assert [r["collected.bhk"] for r in table] == ["2", ""]
    assert [r["collected.callback_time"] for r in table] == ["", "Sunday"]
    assert table[0]["lead_name"] == "Rahul" and table[0]["lead_phone"] == "'+919876543210"
    assert table[0]["transcript"] == "bot: Hello Rahul\ncaller: Yes"


def test_csv_cells_that_look_like_formulas_are_escaped():
    row = {"call_sid": '=HYPERLINK("http://evil.example","x")', "campaign": "+cmd", "status": "completed",
           "outcome": "-2+3", "summary": "@SUM(A1)", "started_at": None, "ended_at": None, "duration_secs": -1.5,
           "end_reason": "\tx", "escalated": False, "lead": {"name": "=1+1"}, "collected": {}}
    cells = list(csv.reader(io.StringIO(calls_csv([row]))))[1]
    assert cells[:5] == ["'=HYPERLINK(\"http://evil.example\",\"x\")", "'+cmd", "completed", "'-2+3", "'@SUM(A1)"]
    assert cells[7] == "-1.5", "a number stays a number"
    assert not any(cell.startswith(("=", "+", "@", "\t", "\r")) for cell in cells)


async def test_csv_export_from_the_api_and_the_cli_escapes_formulas(tmp_path):
    async with served(tmp_path) as server:
        await server.app.state.services.store.record_dialled('=HYPERLINK("http://evil.example","x")', "real_estate",
                                                    {"name": "@evil"}, "+919876543210")
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            api_csv = (await client.get("/calls", params={"format": "csv"})).text
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    cli = subprocess.run([sys.executable, "-m", "bot.cli", "calls", "export", "--csv"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr[-2000:]
    for text in (api_csv, cli.stdout):
        line = text.splitlines()[1]
        assert line.startswith("\"'=HYPERLINK"), line


# --- 7. a finished call's record never changes ----------------------------------------------


async def test_a_second_media_session_for_a_finished_call_is_refused(tmp_path):
    async with served(tmp_path) as server:
        config = dict(url=server.ws_url, call_sid="CA-reused", custom_parameters={"campaign": "real_estate"})
        await ExotelEmulator(EmulatorConfig(**config)).run([HangUp(at=3.0)])
        await wait_finished(server, "CA-reused")
        store = server.app.state.services.store
        first = call_to_dict(await store.find_call("CA-reused"))
        again = await ExotelEmulator(EmulatorConfig(**config)).run([HangUp(at=3.0)])
        await asyncio.sleep(0.5)
        after = call_to_dict(await store.find_call("CA-reused"))
    assert again.close_code == POLICY_VIOLATION and again.payload_sizes == []
    assert after == first, "transcript, end time and all stay as the first session left them"


async def test_two_live_sessions_for_one_call_are_not_both_served(tmp_path):
    async with served(tmp_path) as server:
        config = dict(url=server.ws_url, call_sid="CA-twice", custom_parameters={"campaign": "real_estate"})
        first, second = await asyncio.gather(
            ExotelEmulator(EmulatorConfig(**config)).run([HangUp(at=4.0)]),
            ExotelEmulator(EmulatorConfig(**config)).run([HangUp(at=4.0)]),
        )
    codes = sorted([first.close_code or 0, second.close_code or 0])
    assert POLICY_VIOLATION in codes and [bool(first.payload_sizes), bool(second.payload_sizes)].count(True) == 1


async def test_the_store_keeps_the_first_completion_of_a_call():
    from pipelines.call_session import CallSession
    from serializers.exotel_events import StreamStart

    store = await CallStore.open("sqlite+aiosqlite:///:memory:", migrate=True)
    try:
        first = CallSession.from_handshake(StreamStart(stream_sid="s1", call_sid="CA-1"), {})
        first.add_transcript("user", "hello")
        first.finish("caller_hangup")
        await store.complete_from_session(first)
        second = CallSession.from_handshake(StreamStart(stream_sid="s2", call_sid="CA-1"), {})
        second.add_transcript("user", "overwritten?")
        second.finish("bot_hangup")
        await store.complete_from_session(second)
        record = call_to_dict(await store.find_call("CA-1"))
    finally:
        await store.close()
    assert [e["text"] for e in record["transcript"]] == ["hello"] and record["end_reason"] == "caller_hangup"


# --- 8. secrets stay secret, data files private ---------------------------------------------


@pytest.mark.parametrize("setting, value", [
    ("openai_base_url", "ftp://user:PASSWORD@x"),
    ("deepgram_base_url", "wss//user:PASSWORD@x?key=PASSWORD"),
    ("exotel_api_token", 12345),
    ("api_token", ["PASSWORD"]),
    ("media_auth_password", "PASSWORD"),
])
def test_a_bad_setting_never_echoes_a_credential(setting, value):
    with pytest.raises(SettingsError) as error:
        load_settings(_env_file=None, **{setting: value}, port=0)
    message = str(error.value)
    assert "PASSWORD" not in message and "12345" not in message, message
    assert "\n" not in message and message.startswith("invalid setting: ")


async def test_data_files_and_folders_are_private(tmp_path):
    previous = os.umask(0o022)  # the usual umask: files would be world-readable by default
    try:
        async with served(tmp_path) as server:
            emulator = ExotelEmulator(EmulatorConfig(url=server.ws_url, call_sid="CA-private",
                                                     custom_parameters={"campaign": "real_estate", "name": "Kavya"}))
            await emulator.run([HangUp(at=4.0)])
            session = await wait_finished(server, "CA-private")
            await asyncio.sleep(0.5)
    finally:
        os.umask(previous)
    data = tmp_path / "data"
    assert session.recording_path and (data / ".callback_secret").exists()
    assert any(data.rglob("*.pcm")), "a prepared line is cached"
    loose = [f"{p.relative_to(tmp_path)} {stat.filemode(p.stat().st_mode)}" for p in [data, *data.rglob("*")]
             if p.stat().st_mode & 0o077]
    assert loose == [], loose


async def test_a_callback_that_arrives_before_the_dialled_record_is_applied(tmp_path):
    """Exotel may call back (a call that fails at once) before the dialler has stored the Sid."""
    from bot.exotel.callback_refs import custom_field

    async with FakeExotelREST(account_sid="acme", api_key="key", api_token="token") as exotel:
        async with served(tmp_path, exotel_api_base_url=exotel.base_url, **EXOTEL) as server:
            state = server.app.state.services
            url = state.dialer.status_callback_url("abcdef012345").replace(state.settings.public_base_url,
                                                                           server.http_url)

            async def store_it_late():
                await asyncio.sleep(0.6)
                await state.store.record_dialled("CA-quick", "real_estate", {"id": "L-1"}, "+919876543210",
                                                 custom_field("real_estate", {"id": "L-1"}, "abcdef012345"))

            async with httpx.AsyncClient(timeout=30) as client:
                answer, _ = await asyncio.gather(client.post(url, json={"CallSid": "CA-quick", "Status": "failed"}),
                                                 store_it_late())
            record = await state.store.find_call("CA-quick")
    assert answer.status_code == 200 and record.status == "failed"


def test_the_dial_ref_survives_any_lead_id():
    from bot.exotel.callback_refs import CUSTOM_FIELD_CHARS, custom_field, dial_ref

    campaign = "c" * 100
    for lead_id in ["L-1", "é" * 40, '"' * 40, "x" * 500]:
        text = custom_field(campaign, {"id": lead_id}, "0123456789ab")
        assert len(text) <= CUSTOM_FIELD_CHARS and dial_ref(text) == "0123456789ab", text
