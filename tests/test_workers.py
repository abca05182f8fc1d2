"""Several worker processes share the port; a dialled call's lead, stored by another process,
is found by whichever worker takes the media socket."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bot.config.settings import load_settings
from bot.server.local_server import free_port
from bot.simulator.exotel_emulator import EmulatorConfig, ExotelEmulator, HangUp
from bot.store import CallStore

ROOT = Path(__file__).resolve().parent.parent


def start_two_workers(data_dir: Path) -> tuple[subprocess.Popen, int, set[int]]:
    """`server.py` with WORKERS=2 on a free port, offline; returns once both workers answer."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(data_dir), "WORKERS": "2",
           "DEEPGRAM_API_KEY": "", "OPENAI_API_KEY": "", "ELEVENLABS_API_KEY": ""}
    server = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pids: set[int] = set()
    deadline = time.time() + 90
    while time.time() < deadline and len(pids) < 2:
        try:
            with httpx.Client(timeout=1) as client:  # a new connection each time: any worker
                pids.add(client.get(f"http://127.0.0.1:{port}/health").json()["worker_pid"])
        except httpx.TransportError:
            time.sleep(0.2)
    return server, port, pids


def test_dialled_calls_are_served_by_any_worker(tmp_path):
    server, port, pids = start_two_workers(tmp_path)
    try:
        assert len(pids) == 2, f"two worker processes answer ({pids})"

        names = ["Kavya", "Arjun", "Meera", "Rohan", "Isha", "Vikram", "Anil", "Divya", "Kiran", "Neha", "Ravi", "Sana"]
        db_url = load_settings(_env_file=None, data_dir=tmp_path).database_url

        async def dial_then_answer(batch: range):
            # "Dialled" by this test process: only the shared database knows the leads.
            store = await CallStore.open(db_url, migrate=True)
            for i in batch:
                await store.record_dialled(f"CA-w{i:02d}", "real_estate", {"id": f"L{i}", "name": names[i]},
                                           "+919876500000")
            await store.close()
            calls = [ExotelEmulator(EmulatorConfig(url=f"ws://127.0.0.1:{port}/media", call_sid=f"CA-w{i:02d}",
                                                   custom_parameters={})) for i in batch]
            return await asyncio.gather(*(call.run([HangUp(at=5.0)]) for call in calls))

        served_by: set[int] = set()
        rows: list = []
        for start in range(0, len(names), 4):  # the kernel spreads connections; usually one batch does
            results = asyncio.run(dial_then_answer(range(start, start + 4)))
            assert all(r.violations == [] for r in results)
            deadline = time.time() + 30  # the worker completes a record just after its socket closes
            while True:
                rows = sqlite3.connect(tmp_path / "calls.db").execute(
                    "select call_sid, transcript, metrics from call_records order by call_sid").fetchall()
                if sum(1 for _, _, m in rows if m and "worker_pid" in json.loads(m)) >= start + 4:
                    break
                assert time.time() < deadline, f"records not completed within 30 s: {rows}"
                time.sleep(0.2)
            served_by = {json.loads(m)["worker_pid"] for _, _, m in rows if m and "worker_pid" in json.loads(m)}
            if len(served_by) == 2:
                break
    finally:
        server.terminate()
        server.wait(timeout=30)
    for call_sid, transcript, _ in rows:
        index = int(call_sid.removeprefix("CA-w"))
        assert json.loads(transcript)[0]["text"].startswith(f"Hello {names[index]}"), "the lead was found"
    assert served_by <= pids and len(served_by) == 2, f"both workers took calls ({served_by})"


def test_connections_go_to_the_least_loaded_worker_and_sigterm_stops_every_worker(tmp_path):
    """The supervisor hands each connection to the worker with the fewest open ones (a call
    holds its socket for minutes; SO_REUSEPORT's random hashing split 100 calls up to 62/38),
    restarts a worker that dies, and on SIGTERM stops every worker."""
    server, port, pids = start_two_workers(tmp_path)
    try:
        health = f"http://127.0.0.1:{port}/health"
        assert len(pids) == 2

        def open_and_ask() -> tuple[http.client.HTTPConnection, int]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # stays open (keep-alive)
            conn.request("GET", "/health")
            return conn, json.loads(conn.getresponse().read())["worker_pid"]

        held = [open_and_ask() for _ in range(10)]
        per_worker = {pid: [conn for conn, p in held if p == pid] for pid in pids}
        assert sorted(len(conns) for conns in per_worker.values()) == [5, 5], "open connections split evenly"
        # One worker's calls end: it is now the less loaded one and takes every new connection
        # until the two are level again.
        freed_pid = next(iter(pids))
        for conn in per_worker[freed_pid][:4]:
            conn.close()
        time.sleep(0.5)
        newcomers = [open_and_ask() for _ in range(4)]
        assert [pid for _, pid in newcomers] == [freed_pid] * 4
        for conn, _ in held + newcomers:
            conn.close()
        # Short requests, one after another, alternate.
        answered = []
        for _ in range(20):
            with httpx.Client(timeout=5) as client:
                answered.append(client.get(health).json()["worker_pid"])
        assert sorted(answered.count(pid) for pid in pids) == [10, 10], answered
        body = httpx.get(health).json()
        assert set(body["loop_lag"]) == {"p50_ms", "p95_ms", "max_ms", "stalls", "gc"}
        assert set(body["loop_lag"]["gc"]) == {"count", "full", "total_ms", "max_ms"}
        # A worker that dies is replaced.
        victim = pids.pop()
        os.kill(victim, signal.SIGKILL)
        deadline = time.time() + 60
        while time.time() < deadline and len(pids) < 2:
            try:
                with httpx.Client(timeout=1) as client:
                    pid = client.get(health).json()["worker_pid"]
                    if pid != victim:
                        pids.add(pid)
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert len(pids) == 2, "the killed worker was restarted"
    finally:
        server.terminate()
        server.wait(timeout=30)
    for pid in pids:
        try:
            os.kill(pid, 0)
            raise AssertionError(f"worker {pid} still running after the supervisor stopped")
        except ProcessLookupError:
            pass


def test_a_worker_that_cannot_take_a_connection_is_passed_over():
    """The least-loaded worker cannot take a connection (it is stuck: its channel is full):
    the connection goes to the next worker instead of being dropped."""
    from bot.server.connection_handoff import CLOSED, READY, ConnectionBalancer

    listener = socket.create_server(("127.0.0.1", 0))
    balancer = ConnectionBalancer(listener)
    ends = {}
    for index in (0, 1):
        ours, theirs = socket.socketpair()
        balancer.attach(index, ours)
        theirs.sendall(READY)
        ends[index] = theirs
    balancer.run_for(0.2)
    assert all(channel.ready for channel in balancer.channels.values())
    balancer.channels[1].live = 3  # worker 0 is the least loaded ...
    stuck = balancer.channels[0].sock  # ... but stuck: it reads nothing, its channel fills up
    try:
        while True:
            stuck.send(b"\0" * 65536)
    except BlockingIOError:
        pass
    client = socket.create_connection(listener.getsockname())
    deadline = time.time() + 5
    while balancer.channels[1].handed == 0 and time.time() < deadline:
        balancer.run_for(0.1)
    assert balancer.channels[1].handed == 1, "the connection went to the next worker"
    ends[1].settimeout(2)
    _, fds, _, _ = socket.recv_fds(ends[1], 16, 4)
    assert len(fds) == 1 and balancer.channels[1].live == 4
    handed = socket.socket(fileno=fds[0])
    handed.sendall(b"ping")
    assert client.recv(4) == b"ping", "the handed-over socket is the client's connection"
    ends[1].sendall(CLOSED)
    balancer.run_for(0.2)
    assert balancer.channels[1].live == 3
    for sock in (handed, client, *ends.values()):
        sock.close()
    balancer.close()
