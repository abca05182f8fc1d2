"""Nodes behind the shipped HAProxy config (deploy/haproxy.cfg, Debian's haproxy), on loopback:
calls' WebSockets pass through it to every node, and a node whose /health says it is full
(LIVE_CALL_LIMIT) gets no new calls until it has room again, while its live call goes on."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

from testing.emulated_calls import emulated_calls, wait_for_records
from testing.haproxy import CONFIG, HAPROXY, haproxy, needs_haproxy, until
from testing.server_process import server_process


def server_states(stats: Path) -> dict[str, str]:
    """HAProxy's view of each node: {'node1': 'UP', 'node2': 'DOWN', ...}."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(stats))
        conn.sendall(b"show stat\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {r["svname"]: r["status"].split()[0] for r in rows
            if r["pxname"] == "nodes" and r["svname"].startswith("node") and not r["svname"].endswith("-spare")}


@needs_haproxy
def test_the_shipped_haproxy_config_is_valid():
    env = {**os.environ, "AGENT_BIND": "127.0.0.1:8080", "AGENT_NODE_1": "10.0.0.11:8000",
           "AGENT_NODE_2": "10.0.0.12:8000"}
    checked = subprocess.run([HAPROXY, "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_node_says_full_at_its_live_call_limit_and_ok_once_a_call_ends(tmp_path):
    with server_process(tmp_path, 1, LIVE_CALL_LIMIT="1") as node:
        assert node.health().json()["status"] == "ok"

        async def call_while_checking() -> list:
            call = asyncio.create_task(emulated_calls(node.ws_url, ["CA-full-1"], hang_up_at=6.0, apart=0))
            seen = []
            async with httpx.AsyncClient(timeout=5) as client:
                while not call.done():
                    response = await client.get(f"{node.url}/health")
                    seen.append((response.status_code, response.json()["status"], response.json()["live_calls"]))
                    await asyncio.sleep(0.2)
            await call
            return seen

        seen = asyncio.run(call_while_checking())
        assert (503, "full", 1) in seen, seen
        assert node.health().json()["live_call_limit"] == 1
        until(lambda: node.health().status_code == 200, 30, "the node stayed full after its call ended")


@needs_haproxy
def test_calls_through_haproxy_reach_every_node_and_skip_a_full_one(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (server_process(tmp_path / "a", 1, LIVE_CALL_LIMIT="1") as a, server_process(tmp_path / "b", 1) as b,
          haproxy(tmp_path, [a.port, b.port]) as (port, stats)):
        databases = [tmp_path / "a" / "calls.db", tmp_path / "b" / "calls.db"]
        media = f"ws://127.0.0.1:{port}/media"
        until(lambda: server_states(stats) == {"node1": "UP", "node2": "UP"}, 30, f"nodes not up: {server_states(stats)}")

        # Two calls at once through HAProxy: least connections puts one on each node.
        both = ["CA-lb-both-1", "CA-lb-both-2"]
        asyncio.run(emulated_calls(media, both, hang_up_at=3.0, apart=0.5))
        assert [len(found) for found in wait_for_records(databases, both)] == [1, 1]

        # Node A at its limit (a long call straight to it): HAProxy takes it out, new calls go
        # to B, and A's call goes on to its own end.
        until(lambda: server_states(stats)["node1"] == "UP", 30, "node A did not come back after its call")

        async def while_a_is_full() -> tuple:
            long_call = asyncio.create_task(emulated_calls(a.ws_url, ["CA-lb-long"], hang_up_at=20.0, apart=0))
            deadline = time.monotonic() + 15
            while server_states(stats)["node1"] != "DOWN":
                assert time.monotonic() < deadline and not long_call.done(), f"A never taken out: {server_states(stats)}"
                await asyncio.sleep(0.2)
            later = ["CA-lb-later-1", "CA-lb-later-2", "CA-lb-later-3"]
            await emulated_calls(media, later, hang_up_at=1.5, apart=0.5)
            down_while_later_ran = server_states(stats)["node1"] == "DOWN"
            return later, down_while_later_ran, await long_call

        later, still_down, (long_result,) = asyncio.run(while_a_is_full())
        assert still_down
        a_has, b_has = wait_for_records(databases, later)
        assert a_has == set() and b_has == set(later)
        assert long_result.closed_by == "emulator", (long_result.closed_by, long_result.close_code)  # it hung up itself
        assert wait_for_records(databases, ["CA-lb-long"])[0] == {"CA-lb-long"}
        until(lambda: server_states(stats)["node1"] == "UP", 30, "node A did not come back once it had room")


@needs_haproxy
def test_when_every_node_is_full_calls_still_reach_one(tmp_path):
    """Full steers, it never refuses: with both nodes out, the spares take the call."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (server_process(tmp_path / "a", 1, LIVE_CALL_LIMIT="1") as a,
          server_process(tmp_path / "b", 1, LIVE_CALL_LIMIT="1") as b,
          haproxy(tmp_path, [a.port, b.port]) as (port, stats)):
        until(lambda: server_states(stats) == {"node1": "UP", "node2": "UP"}, 30, f"nodes not up: {server_states(stats)}")

        async def while_both_are_full() -> list:
            holding = [asyncio.create_task(emulated_calls(node.ws_url, [f"CA-hold-{i}"], hang_up_at=20.0, apart=0))
                       for i, node in enumerate((a, b))]
            deadline = time.monotonic() + 15
            while server_states(stats) != {"node1": "DOWN", "node2": "DOWN"}:
                assert time.monotonic() < deadline, f"nodes not taken out: {server_states(stats)}"
                await asyncio.sleep(0.2)
            served = await emulated_calls(f"ws://127.0.0.1:{port}/media", ["CA-all-full"], hang_up_at=2.0, apart=0)
            await asyncio.gather(*holding)
            return served

        (result,) = asyncio.run(while_both_are_full())
        assert result.media_at, "the call through HAProxy heard no bot audio"
        found = wait_for_records([tmp_path / "a" / "calls.db", tmp_path / "b" / "calls.db"], ["CA-all-full"])
        assert sum(len(f) for f in found) == 1
