"""Outbound calls end to end: POST /calls -> the fake Exotel REST API dials -> it answers and
opens the media socket like the Voicebot applet (dynamic URL) -> the conversation -> status
callbacks -> the call record in the store."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bot.exotel.applet import applet_url
from bot.exotel.call_status import call_is_over
from bot.simulator.caller_speech import speak
from bot.simulator.exotel_emulator import HangUp, Say
from bot.simulator.exotel_rest import FakeExotelREST
from testing.agent_scripts import EL_FAST, SHORT_GREETING, qualifying_agent
from testing.agent_stack import agent_stack
from testing.dialling import EXOTEL


def _answered_call_is_over(record: dict) -> bool:
    return record["status"] == "completed" and call_is_over(record["status"], record["ended_at"], record["end_reason"])


async def wait_record(client: httpx.AsyncClient, sid: str, done=_answered_call_is_over,
                      timeout: float = 20.0, headers=None) -> dict:
    record = {}
    for _ in range(int(timeout / 0.1)):
        response = await client.get(f"/calls/{sid}", headers=headers)
        if response.status_code == 200:
            record = response.json()
            if done(record):
                return record
        await asyncio.sleep(0.1)
    raise AssertionError(f"record of {sid} never completed: {record}")


async def test_one_lead_dialled_answered_and_recorded(tmp_path):
    lines = ["Yes I have a few minutes", "Around eighty lakhs", "Two bedrooms please"]
    script = [Say(at=3.5, pcm=speak(lines[0])), Say(at=8.0, pcm=speak(lines[1])), Say(at=12.5, pcm=speak(lines[2]))]
    async with FakeExotelREST(account_sid="acme", api_key="key", api_token="token",
                              caller_script=lambda number: script, hangup_after=30.0) as exotel:
        async with agent_stack(tmp_path, stt_script=lines, llm=qualifying_agent, campaign_tweaks=SHORT_GREETING,
                               elevenlabs_kwargs=EL_FAST, exotel_api_base_url=exotel.base_url,
                               api_token="s3cret", **EXOTEL) as stack:
            server = stack.server
            exotel.dynamic_url = applet_url(server.settings, server.app.state.services.signing_key).replace(
                server.settings.public_base_url, server.http_url)
            server.settings.public_base_url = server.http_url  # callbacks and media reach this server
            auth = {"Authorization": "Bearer s3cret"}
            async with httpx.AsyncClient(base_url=server.http_url) as client:
                refused = await client.post("/calls", json={"to": "9876543210"})
                bad_number = await client.post("/calls", headers=auth, json={"to": "12345"})
                placed = await client.post("/calls", headers=auth, json={
                    "to": "098765 43210", "campaign": "real_estate", "lead": {"id": "L-7", "name": "Kavya"}})
                assert placed.status_code == 200, placed.text
                sid = placed.json()["call_sid"]
                record = await wait_record(client, sid, headers=auth)
                listed = await client.get("/calls", headers=auth, params={"campaign": "real_estate"})
                csv_text = (await client.get("/calls", headers=auth, params={"format": "csv"})).text
            await exotel.drain()
            dial_form = exotel.calls[0].form
            emulated = exotel.emulator_results[sid]

    assert refused.status_code == 401
    assert bad_number.status_code == 422 and "invalid phone number" in bad_number.text
    assert dial_form["From"] == "+919876543210" and dial_form["CallerId"] == "08047112233"
    assert dial_form["Url"].endswith("/acme/exoml/start_voice/4242") and dial_form["CallType"] == "trans"
    assert "/webhooks/exotel/call-status?ref=" in dial_form["StatusCallback"]
    assert len(dial_form["CustomField"]) <= 128 and "L-7" in dial_form["CustomField"]
    assert dial_form["Record"] == "true" and int(dial_form["TimeLimit"]) == 480 + 60
    assert emulated.violations == [] and emulated.closed_by == "server"
    assert record["campaign"] == "real_estate" and record["lead"]["name"] == "Kavya"
    assert record["transcript"][0]["text"].startswith("Hello Kavya"), "the greeting names the lead"
    assert record["outcome"] == "interested" and record["collected"] == {"budget": "80 lakhs", "bhk": 2}
    assert record["status"] == "completed" and record["end_reason"] == "bot_hangup"
    assert record["metrics"]["greeting_prepared"] == 1, "the greeting was synthesized while it rang"
    assert record["recording"]["path"].endswith(f"{sid}.wav")
    assert [c["call_sid"] for c in listed.json()["calls"]] == [sid]
    assert csv_text.splitlines()[0].startswith("call_sid,campaign,status,outcome")


@pytest.mark.parametrize("content_type", ["json", "form"])
async def test_status_callbacks_are_idempotent_and_signed(tmp_path, content_type):
    async with FakeExotelREST(account_sid="acme", api_key="key", api_token="token",
                              outcomes=["busy", "no-answer"], callback_repeat=True,
                              callback_content_type=content_type) as exotel:
        async with agent_stack(tmp_path, stt_script=[], llm=qualifying_agent,
                               exotel_api_base_url=exotel.base_url, **EXOTEL) as stack:
            server = stack.server
            server.settings.public_base_url = server.http_url
            async with httpx.AsyncClient(base_url=server.http_url) as client:
                sids = [(await client.post("/calls", json={"to": f"98765432{i}0"})).json()["call_sid"] for i in (1, 2)]
                await exotel.drain()
                busy = await wait_record(client, sids[0], done=lambda r: r["status"] == "busy")
                no_answer = await wait_record(client, sids[1], done=lambda r: r["status"] == "no-answer")
                forged = await client.post("/webhooks/exotel/call-status?ref=x&sig=" + "0" * 32,
                                           json={"CallSid": sids[0], "Status": "completed"})
                late = exotel.callbacks_for(sids[0])[0]
                replay = await client.post(late.url, json={"CallSid": sids[0], "Status": "ringing"})
                after = (await client.get(f"/calls/{sids[0]}")).json()
    assert len(exotel.callbacks_sent) == 4 and all(c.status == 200 for c in exotel.callbacks_sent)
    assert busy["status"] == "busy" and no_answer["status"] == "no-answer"
    assert forged.status_code == 403
    assert replay.status_code == 200 and after["status"] == "busy", "a late 'ringing' never undoes 'busy'"


async def test_dialling_errors_are_clear(tmp_path):
    async with FakeExotelREST(account_sid="acme", api_key="key", api_token="other") as exotel:
        async with agent_stack(tmp_path, stt_script=[], llm=qualifying_agent,
                               exotel_api_base_url=exotel.base_url, **EXOTEL) as stack:
            async with httpx.AsyncClient(base_url=stack.server.http_url) as client:
                wrong_credentials = await client.post("/calls", json={"to": "9876543210"})
                no_campaign = await client.post("/calls", json={"to": "9876543210", "campaign": "nope"})
    assert wrong_credentials.status_code == 502 and "credentials" in wrong_credentials.text
    assert no_campaign.status_code == 404


async def test_without_exotel_credentials_posting_a_call_says_what_is_missing(tmp_path):
    async with agent_stack(tmp_path, stt_script=[], llm=qualifying_agent) as stack:
        async with httpx.AsyncClient(base_url=stack.server.http_url) as client:
            response = await client.post("/calls", json={"to": "9876543210"})
            openapi = (await client.get("/openapi.json")).json()
    assert response.status_code == 503 and "EXOTEL_API_TOKEN" in response.text
    assert {"/calls", "/calls/{call_sid}", "/webhooks/exotel/call-status", "/exotel/connect"} <= set(openapi["paths"])


async def test_post_call_webhook_receives_the_record_with_retries(tmp_path):
    from aiohttp import web

    received: list[dict] = []
    failures = {"left": 1}

    async def hook(request: web.Request) -> web.Response:
        if failures["left"]:
            failures["left"] -= 1
            return web.Response(status=503)
        received.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    tweaks = {"real_estate": {**SHORT_GREETING["real_estate"], "webhook_url": f"http://127.0.0.1:{port}/hook"}}
    try:
        async with agent_stack(tmp_path, stt_script=[], llm=qualifying_agent, campaign_tweaks=tweaks,
                               elevenlabs_kwargs=EL_FAST) as stack:
            emu = stack.emulator()
            await emu.run([HangUp(at=2)])
            for _ in range(100):
                if received:
                    break
                await asyncio.sleep(0.1)
    finally:
        await runner.cleanup()
    assert failures["left"] == 0 and len(received) == 1, "delivered after one failed attempt"
    assert received[0]["call_sid"] == emu.config.call_sid and received[0]["end_reason"] == "caller_hangup"
    assert received[0]["transcript"][0]["role"] == "assistant"


def test_an_answered_call_is_over_only_once_its_session_wrote_its_end():
    """Regression: Exotel's `completed` callback can land a moment before the media session has
    written the outcome; a follower that stopped then printed no outcome."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    assert not call_is_over("in-progress", None)
    assert call_is_over("busy", None) and call_is_over("no-answer", now.isoformat())
    assert not call_is_over("completed", now.isoformat(), None, now=now)  # callback first
    assert call_is_over("completed", now.isoformat(), "bot_hangup", now=now)  # session's end written
    # No session ever wrote an end (the flow never reached the Voicebot applet): final after a grace.
    assert call_is_over("completed", now - timedelta(seconds=31), None, now=now)
    assert call_is_over("completed", (now - timedelta(seconds=31)).replace(tzinfo=None), None, now=now)
