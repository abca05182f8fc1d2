"""The whole multi-machine shape on loopback: PostgreSQL, an S3 server (moto), two app nodes
with their own DATA_DIRs behind the shipped HAProxy config, three `bot worker` processes, and
the fake Exotel REST API answering calls by opening media sockets to HAProxy.

A campaign of 60 leads (some busy once, some never answering) runs at 30 calls a minute with
8 at once; mid-campaign one worker and one node are killed with SIGKILL. Then: every lead is
final; each lead was dialled exactly as many times as it used attempts; Exotel never saw more
than 30 dials in any 60 seconds nor more than 8 of the campaign's calls live at once; every
call's record is final (answered ones with their transcript); every recording and prepared
greeting is readable from the surviving node.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from contextlib import ExitStack
from datetime import timedelta

import asyncpg
import boto3
import httpx
import pytest

from bot.config.settings import load_settings
from bot.exotel.applet import applet_url
from bot.exotel.call_status import call_is_over
from bot.exotel.signing import signing_key
from bot.server.local_server import free_port
from bot.simulator.exotel_emulator import HangUp
from bot.simulator.exotel_rest import FakeExotelREST
from bot.store import CallStore
from testing.databases import PG_URL, pg_dsn, postgres_unreachable
from testing.haproxy import haproxy, needs_haproxy
from testing.job_workers import job_worker, most_in_any_window
from testing.server_process import ServerProcess, server_process

LEADS = 60
PER_MINUTE = 30
CONCURRENCY = 8
BUCKET = "agent-shared"
SECRET = "multi-node-callback-secret-0123456789"
TOKEN = "multi-node-api-token"


def outcome_rule():
    """Every 10th lead from the 3rd is busy on its first attempt; from the 7th never answers."""
    tries: Counter = Counter()

    def outcome(number: str) -> str:
        tries[number] += 1
        index = int(number[-3:])
        if index % 10 == 7:
            return "no-answer"
        if index % 10 == 3 and tries[number] == 1:
            return "busy"
        return "answered"

    return outcome


@pytest.fixture
async def pg_url():
    reason = await postgres_unreachable()
    if reason:
        pytest.skip(reason)
    name = f"multinode_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        from sqlalchemy.engine import make_url

        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def s3():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()


def kill_node(node: ServerProcess) -> None:
    """SIGKILL the node's supervisor and its workers: nothing of it runs any more."""
    for pid in {node.process.pid, *node.worker_pids}:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.process.wait(timeout=10)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    live = best = 0
    for _, step in edges:
        live += step
        best = max(best, live)
    return best


@needs_haproxy
async def test_a_campaign_across_nodes_and_workers_survives_killing_one_of_each(tmp_path, pg_url, s3):
    endpoint, s3_client = s3
    edge_port = free_port()
    edge = f"http://127.0.0.1:{edge_port}"
    outcome = outcome_rule()
    async with FakeExotelREST(account_sid="acme", api_key="key", api_token="token", outcomes=outcome,
                              caller_script=lambda number: [HangUp(at=10.0)], ring_secs=1.0) as exotel:
        shared = {
            "DATABASE_URL": pg_url, "OBJECT_STORE_URL": f"s3://{BUCKET}/agent", "OBJECT_STORE_ENDPOINT": endpoint,
            "OBJECT_STORE_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "EXOTEL_ACCOUNT_SID": "acme", "EXOTEL_API_KEY": "key", "EXOTEL_API_TOKEN": "token",
            "EXOTEL_CALLER_ID": "08047112233", "EXOTEL_APP_ID": "4242", "EXOTEL_API_BASE_URL": exotel.base_url,
            "EXOTEL_CALLS_PER_MINUTE": "200", "CALLBACK_SECRET": SECRET, "PUBLIC_BASE_URL": edge,
            "API_TOKEN": TOKEN, "WORKER_HEARTBEAT_SECS": "1", "WORKER_LOST_AFTER_SECS": "6",
            "JOB_SWEEP_SECS": "2", "RECONCILE_AFTER_SECS": "20", "JOB_WORKER_CONCURRENCY": "8",
        }
        settings = load_settings(_env_file=None, public_base_url=edge, callback_secret=SECRET,
                                 data_dir=tmp_path / "edge")
        exotel.dynamic_url = applet_url(settings, signing_key(settings))
        with ExitStack() as stack:
            (tmp_path / "node1").mkdir()
            (tmp_path / "node2").mkdir()
            node1 = stack.enter_context(server_process(tmp_path / "node1", 1, **shared))
            node2 = stack.enter_context(server_process(tmp_path / "node2", 1, **shared))
            stack.enter_context(haproxy(tmp_path, [node1.port, node2.port], port=edge_port))
            workers = [stack.enter_context(job_worker(tmp_path, i, shared)) for i in range(3)]
            numbers = [f"98765{i:05d}" for i in range(LEADS)]
            # no names: one greeting for every lead, prepared once and shared through S3 (the nodes'
            # offline voice is CPU-bound; a personal greeting per call would measure this machine's cores)
            csv = "id,phone\n" + "".join(f"L{i},{n}\n" for i, n in enumerate(numbers))
            async with httpx.AsyncClient(base_url=edge, timeout=30,
                                         headers={"authorization": f"Bearer {TOKEN}"}) as client:
                started = await client.post("/campaigns", files={"leads": ("leads.csv", csv, "text/csv")},
                                            data={"campaign": "real_estate", "concurrency": str(CONCURRENCY),
                                                  "calls_per_minute": str(PER_MINUTE), "window": "00:00-23:59:59",
                                                  "max_attempts": "2", "retry_delay_secs": "5"})
                assert started.status_code == 201, started.text
                run_id = started.json()["run_id"]
                while len([c for c in exotel.calls if c.sid]) < 20:
                    await asyncio.sleep(0.2)
                workers[0].send_signal(signal.SIGKILL)
                kill_node(node1)
                progress = None
                async with asyncio.timeout(480):
                    while not (progress and progress["finished"]):
                        await asyncio.sleep(1.0)
                        answer = await client.get(f"/campaigns/{run_id}")
                        if answer.status_code == 200:
                            progress = answer.json()
                await exotel.drain()
            store = await CallStore.open(pg_url)
            try:
                leads = await store.list_leads(run_id)
                records = {sid: await store.find_call(sid) for sid in {c.sid for c in exotel.calls if c.sid}}
            finally:
                await store.close()
            # recordings, through the surviving node
            async with httpx.AsyncClient(base_url=node2.url, timeout=30,
                                         headers={"authorization": f"Bearer {TOKEN}"}) as survivor:
                heard = [sid for sid, r in records.items() if r is not None and r.end_reason == "caller_hangup"]
                recordings = {sid: await survivor.get(f"/calls/{sid}/recording") for sid in heard}
    # every lead final
    assert progress["counts"]["pending"] == progress["counts"]["dialling"] == progress["counts"]["in-call"] == 0
    by_number = {lead.phone[-10:]: lead for lead in leads}
    never_answers = {n for n in numbers if int(n[-3:]) % 10 == 7}
    assert {lead.state for lead in leads} <= {"done", "failed"}
    assert {n for n, lead in by_number.items() if lead.state == "failed"} == never_answers
    # each lead dialled once per attempt it used
    accepted = [c for c in exotel.calls if c.sid]
    dials = Counter(c.form["From"][-10:] for c in accepted)
    assert {n: dials[n] for n in numbers} == {n: by_number[n].attempts for n in numbers}, "a lead was dialled twice"
    assert all(dials[n] == 2 for n in never_answers)
    # the limits, as Exotel saw them
    times = sorted(c.at for c in accepted)
    tight = [(round(times[i + PER_MINUTE] - times[i], 2), i) for i in range(len(times) - PER_MINUTE)
             if times[i + PER_MINUTE] - times[i] < 60.0]
    assert most_in_any_window(times, 60.0) <= PER_MINUTE, f"more than {PER_MINUTE} dials within 60 s: {tight}"
    placed = list(exotel.state.values())
    live = [(call.created.timestamp(), call.end_time.timestamp()) for call in placed if call.end_time is not None]
    assert len(live) == len(accepted), "a call never ended at Exotel"
    assert most_at_once(live) <= CONCURRENCY
    # every record final; answered calls heard the bot
    assert all(r is not None for r in records.values()), "a dialled call has no record"
    assert all(call_is_over(r.status, r.ended_at, r.end_reason, now=r.ended_at + timedelta(minutes=5))
               for r in records.values() if r is not None)
    assert heard, "no call ran to the caller's hang-up"
    silent = {sid: (records[sid].owner_id, records[sid].duration_secs, records[sid].metrics) for sid in heard
              if not records[sid].transcript}
    assert not silent, f"answered calls with no transcript: {silent}"
    # recordings and greetings from the surviving node (S3)
    assert {sid: answer.status_code for sid, answer in recordings.items()} == {sid: 200 for sid in heard}
    assert all(answer.content[:4] == b"RIFF" for answer in recordings.values())
    greetings = s3_client.list_objects_v2(Bucket=BUCKET, Prefix="agent/speech/").get("Contents", [])
    assert greetings, "no prepared greeting reached the shared store"
    node2_settings = load_settings(_env_file=None, data_dir=tmp_path / "node2", object_store_url=f"s3://{BUCKET}/agent",
                                   object_store_endpoint=endpoint, object_store_region="us-east-1")
    from bot.config.object_storage import objects_for

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    speech = objects_for(node2_settings, "speech", tmp_path / "unused")
    for item in greetings:
        key = item["Key"][len("agent/speech/"):]
        assert await speech.get(key), f"greeting {key} unreadable"
