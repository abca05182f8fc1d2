"""Prepared speech and recordings in object storage (OBJECT_STORE_URL), against moto's S3
server on loopback through obstore: what one node writes, another reads; an unreachable store
costs a cache miss, never a call; keys never come from the wire."""

from __future__ import annotations

import asyncio
import io
import wave
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from bot.config.object_storage import FolderObjects, ObjectStorageError, S3Objects, checked_key
from bot.config.settings import load_settings
from bot.server.local_server import free_port, serve_locally
from bot.simulator.caller_speech import speak
from bot.simulator.exotel_emulator import HangUp, Say
from pipelines.speech_cache import speech_cache_for
from testing.agent_scripts import EL_FAST, SHORT_GREETING
from testing.agent_stack import agent_stack
from testing.waiting import wait_finished

BUCKET = "agent-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def aws_keys(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


def _keys_in(endpoint: str, prefix: str) -> list[str]:
    listing = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                           aws_secret_access_key="test").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def _node_settings(tmp_path: Path, endpoint: str, prefix: str, **extra):
    return load_settings(_env_file=None, data_dir=tmp_path, object_store_url=f"s3://{BUCKET}/{prefix}",
                         object_store_endpoint=endpoint, object_store_region="us-east-1", **extra)


@pytest.mark.parametrize("key", ["../secrets", "/etc/passwd", "a/../../b", "", "a//b", "x" * 201, "a b", "a/b/c/d/e"])
def test_a_key_that_could_leave_its_folder_is_refused(key):
    with pytest.raises(ValueError):
        checked_key(key)


async def test_folder_objects_are_private_files(tmp_path):
    objects = FolderObjects(tmp_path / "store")
    await objects.put("speech/line.pcm", b"pcm")
    assert await objects.get("speech/line.pcm") == b"pcm" and await objects.get("speech/other.pcm") is None
    assert (tmp_path / "store" / "speech" / "line.pcm").stat().st_mode & 0o777 == 0o600


async def test_s3_objects_round_trip_and_a_missing_key_is_none(s3_endpoint, aws_keys):
    objects = S3Objects(f"s3://{BUCKET}/unit", endpoint=s3_endpoint, region="us-east-1")
    await objects.put("speech/a.pcm", b"\x01\x02")
    assert await objects.get("speech/a.pcm") == b"\x01\x02"
    assert await objects.get("speech/missing.pcm") is None
    assert objects.location("speech/a.pcm") == f"s3://{BUCKET}/unit/speech/a.pcm"
    assert objects.key_of(f"s3://{BUCKET}/unit/speech/a.pcm") == "speech/a.pcm"
    assert objects.key_of(f"s3://{BUCKET}/elsewhere/a.pcm") is None
    assert "unit/speech/a.pcm" in _keys_in(s3_endpoint, "unit/")


async def test_a_line_prepared_on_one_node_is_read_on_another(tmp_path, s3_endpoint, aws_keys):
    node_a = speech_cache_for(_node_settings(tmp_path / "a", s3_endpoint, "shared"))
    node_b = speech_cache_for(_node_settings(tmp_path / "b", s3_endpoint, "shared"))
    made: list[str] = []

    async def synthesize(who: str) -> bytes:
        made.append(who)
        return b"greeting-pcm" * 100

    assert await node_a.get_or_make("greeting1", lambda: synthesize("a")) == b"greeting-pcm" * 100
    assert await node_b.get_or_make("greeting1", lambda: synthesize("b")) == b"greeting-pcm" * 100
    assert made == ["a"]  # B read A's line instead of synthesizing it again
    assert _keys_in(s3_endpoint, "shared/speech/") == ["shared/speech/greeting1.pcm"]
    assert not (tmp_path / "b" / "cache").exists()  # nothing on B's disk


async def test_an_unreachable_object_store_is_a_cache_miss_not_a_failure(tmp_path, aws_keys):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cache = speech_cache_for(_node_settings(tmp_path, dead, "down"))
    with pytest.raises(ObjectStorageError):  # the store itself says what failed, in one line
        await cache.objects.get("x.pcm")

    async def synthesize() -> bytes:
        return b"live"

    assert await cache.get("line") is None
    assert await cache.get_or_make("line", synthesize) == b"live"


async def test_a_recording_goes_to_the_object_store_and_any_node_serves_it(tmp_path, s3_endpoint, aws_keys):
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    store = {"object_store_url": f"s3://{BUCKET}/calls", "object_store_endpoint": s3_endpoint,
             "object_store_region": "us-east-1", "database_url": database, "api_token": "t0ken"}
    async with agent_stack(tmp_path / "a", stt_script=["Tell me about the project"], campaign_tweaks=SHORT_GREETING,
                           elevenlabs_kwargs=EL_FAST, **store) as stack:
        emu = stack.emulator()
        await emu.run([Say(at=2.0, pcm=speak("Tell me about the project")), HangUp(at=5)])
        session = await wait_finished(stack, emu.config.call_sid)
    sid = emu.config.call_sid
    assert session.recording_path == f"s3://{BUCKET}/calls/recordings/{sid}.wav"
    assert not (tmp_path / "a" / "data" / "recordings" / f"{sid}.wav").exists()  # uploaded, then removed

    other = load_settings(_env_file=None, host="127.0.0.1", port=free_port(), data_dir=tmp_path / "b",
                          campaigns_dir=tmp_path / "a" / "configs", **store)
    async with serve_locally(other) as node_b, httpx.AsyncClient(base_url=node_b.http_url, timeout=30) as client:
        assert (await client.get(f"/calls/{sid}/recording")).status_code == 401
        auth = {"Authorization": "Bearer t0ken"}
        response = await client.get(f"/calls/{sid}/recording", headers=auth)
        assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(response.content)) as wav:
            assert wav.getnchannels() == 2 and wav.getnframes() / wav.getframerate() > 3.0
        assert (await client.get("/calls/CA-never/recording", headers=auth)).status_code == 404
        assert (await client.get("/calls/..%2F..%2Fetc/recording", headers=auth)).status_code == 404


async def test_without_object_storage_the_recording_stays_on_its_node(tmp_path):
    async with agent_stack(tmp_path, stt_script=["Hello"], campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs=EL_FAST,
                           api_token="t0ken") as stack:
        emu = stack.emulator()
        await emu.run([HangUp(at=3)])
        session = await wait_finished(stack, emu.config.call_sid)
        local = tmp_path / "data" / "recordings" / f"{emu.config.call_sid}.wav"
        assert session.recording_path == str(local) and local.exists()
        async with httpx.AsyncClient(base_url=stack.server.http_url, timeout=30,
                                     headers={"Authorization": "Bearer t0ken"}) as client:
            for _ in range(100):  # the record is written just after the session finishes
                response = await client.get(f"/calls/{emu.config.call_sid}/recording")
                if response.status_code not in (404, 409):
                    break
                await asyncio.sleep(0.05)
        assert response.status_code == 200 and response.content == local.read_bytes()


async def test_recordings_are_not_served_without_an_api_token_nor_while_the_call_is_live(tmp_path):
    async with agent_stack(tmp_path, stt_script=["Hello"], campaign_tweaks=SHORT_GREETING,
                           elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        await emu.run([HangUp(at=2)])
        await wait_finished(stack, emu.config.call_sid)
        async with httpx.AsyncClient(base_url=stack.server.http_url, timeout=30) as client:
            response = await client.get(f"/calls/{emu.config.call_sid}/recording")
        assert response.status_code == 403 and "API_TOKEN" in response.json()["detail"]
    async with agent_stack(tmp_path / "live", stt_script=["Hello"], campaign_tweaks=SHORT_GREETING,
                           elevenlabs_kwargs=EL_FAST, api_token="t0ken") as stack:
        emu = stack.emulator()
        call = asyncio.create_task(emu.run([HangUp(at=6)]))
        async with httpx.AsyncClient(base_url=stack.server.http_url, timeout=30,
                                     headers={"Authorization": "Bearer t0ken"}) as client:
            statuses = []
            while not call.done():
                statuses.append((await client.get(f"/calls/{emu.config.call_sid}/recording")).status_code)
                await asyncio.sleep(0.2)
        await call
    assert 409 in statuses and 200 not in statuses, statuses


async def test_a_call_with_an_unreachable_object_store_is_heard_and_keeps_its_recording(tmp_path, aws_keys):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with agent_stack(tmp_path, stt_script=["Hello"], campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs=EL_FAST,
                           object_store_url=f"s3://{BUCKET}/down", object_store_endpoint=dead,
                           object_store_region="us-east-1") as stack:
        emu = stack.emulator()
        result = await emu.run([HangUp(at=4)])
        session = await wait_finished(stack, emu.config.call_sid, timeout=60)
    assert result.media_at, "the caller heard nothing"
    local = tmp_path / "data" / "recordings" / f"{emu.config.call_sid}.wav"
    assert session.recording_path == str(local) and local.exists()  # kept on the node, not lost
