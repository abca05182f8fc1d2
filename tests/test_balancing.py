"""The supervisor's balancer sees every connection close, WebSocket calls included (uvicorn
swaps the protocol on upgrade, so the HTTP protocol never hears of it), and so spreads calls
evenly after calls have ended and after a worker restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import threading
import time

import httpx
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import connect

from bot.config.settings import load_settings
from bot.server.app_server import server_config
from bot.server.connection_handoff import ConnectionBalancer, HandoffServer
from testing.emulated_calls import emulated_calls
from testing.server_process import server_process


def _tiny_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict:
        return {"ok": True}

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.receive_text()  # until the client closes

    return app


async def test_a_handed_over_websocket_reports_its_close():
    """The real balancer and HandoffServer: a WebSocket connection, once closed, no longer
    counts against its worker (nor does a plain HTTP one)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    balancer = ConnectionBalancer(listener)
    ours, theirs = socket.socketpair()
    balancer.attach(0, ours)
    stop = threading.Event()
    supervisor = threading.Thread(target=lambda: [balancer.run_for(0.05) for _ in iter(stop.is_set, True)])
    supervisor.start()
    settings = load_settings(_env_file=None)
    worker = HandoffServer(server_config(_tiny_app(), settings, lifespan="off"), theirs)
    serving = asyncio.create_task(worker.serve())
    channel = balancer.channels[0]

    async def until(condition, what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, f"{what} (live={channel.live}, handed={channel.handed})"
            assert not serving.done(), serving
            await asyncio.sleep(0.02)

    try:
        await until(lambda: channel.ready, "the worker never reported ready")
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/ping")).json() == {"ok": True}
        await until(lambda: channel.handed == 1 and channel.live == 0, "the HTTP connection's close was not counted")
        async with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=10) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 10) == "hello"
            await until(lambda: channel.live == 1, "the WebSocket connection is live")
        await until(lambda: channel.handed == 2 and channel.live == 0, "the WebSocket connection's close was not counted")
    finally:
        worker.should_exit = True
        await asyncio.wait_for(serving, 15)
        stop.set()
        supervisor.join(10)
        balancer.close()
        ours.close()


def _calls(port: int, sids: list[str], hang_up_at: float, apart: float) -> list:
    return asyncio.run(emulated_calls(f"ws://127.0.0.1:{port}/media", sids, hang_up_at, apart))


def _served_by(database, sids: list[str], within: float = 30.0) -> dict[str, int]:
    """sid -> the pid of the worker that ran it (from its completed record)."""
    deadline = time.monotonic() + within
    while True:
        with sqlite3.connect(database) as db:
            rows = db.execute(f"select call_sid, metrics from call_records where call_sid in "
                              f"({','.join('?' * len(sids))})", sids).fetchall()
        found = {sid: json.loads(m).get("worker_pid") for sid, m in rows if m}
        if len(found) == len(sids) and all(found.values()):
            return found
        assert time.monotonic() < deadline, f"records not completed within {within:.0f} s: {found}"
        time.sleep(0.2)


def test_calls_spread_evenly_after_short_calls_and_after_a_worker_restart(tmp_path):
    with server_process(tmp_path, 2) as server:
        database = tmp_path / "calls.db"
        short = [f"CA-short-{i}" for i in range(6)]
        for sid in short:  # one after another: each closes before the next opens
            _calls(server.port, [sid], hang_up_at=1.0, apart=0)
        assert set(_served_by(database, short).values()) == server.worker_pids

        victim = next(iter(server.worker_pids))
        os.kill(victim, signal.SIGKILL)
        server.worker_pids.discard(victim)
        server.wait_for_workers(1, exclude=server.worker_pids | {victim})  # its replacement answers
        assert len(server.worker_pids) == 2

        # Four calls at once: two per worker, the restarted one and the one that took the short calls.
        overlapping = [f"CA-after-restart-{i}" for i in range(4)]
        _calls(server.port, overlapping, hang_up_at=4.0, apart=0.3)
        pids = list(_served_by(database, overlapping).values())
        assert sorted(pids.count(pid) for pid in server.worker_pids) == [2, 2], pids

        # And again once those have ended.
        again = [f"CA-again-{i}" for i in range(4)]
        _calls(server.port, again, hang_up_at=4.0, apart=0.3)
        pids = list(_served_by(database, again).values())
        assert sorted(pids.count(pid) for pid in server.worker_pids) == [2, 2], pids
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
