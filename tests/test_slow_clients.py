"""Slow and silent clients are closed, and the server keeps answering meanwhile: a request's
head must arrive within HTTP_HEADER_TIMEOUT_SECS, a stalled body or an idle kept-alive
connection is closed after HTTP_IDLE_TIMEOUT_SECS. On every way the app is served: in
process (tests, demo), `server.py` with WORKERS=1, and with WORKERS=2 (handed-over sockets)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bot.config.settings import load_settings
from bot.server.local_server import free_port, serve_locally
from testing.server_process import server_process

TIMEOUTS = {"http_header_timeout_secs": 1.0, "http_idle_timeout_secs": 1.0}
GIVE_UP_SECS = 30.0  # the failure bound; the server closes them about a second in


async def _open(port: int, first_bytes: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    if first_bytes:
        writer.write(first_bytes)
        await writer.drain()
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True once the server has closed the connection (EOF or reset), False if it is still open."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(4096), within)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """A slowloris: one byte of a request head every `every` seconds, never finishing."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)
    except (ConnectionResetError, BrokenPipeError):
        pass


async def _hold_slow_clients(port: int, each: int) -> None:
    """`each` idle, half-sent, trickling and stalled-body connections, plus kept-alive ones that
    went quiet after a response; all must be closed by the server while /health still answers."""
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    idle = [await _open(port) for _ in range(each)]
    half = [await _open(port, head) for _ in range(each)]
    trickling = [await _open(port) for _ in range(each // 10 or 1)]
    trickles = [asyncio.create_task(_trickle(w, head + b"a" * 200, 0.2)) for _, w in trickling]
    stalled_body = [await _open(port, b"POST /calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                      b"Content-Length: 200\r\n\r\n{\"to\": ") for _ in range(each // 10 or 1)]
    kept_alive = []
    for _ in range(each // 10 or 1):
        reader, writer = await _open(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 10)
        assert status.startswith(b"HTTP/1.1 200"), status  # a complete request is served
        kept_alive.append((reader, writer))
    try:
        async with httpx.AsyncClient(timeout=10) as client:  # responsive while they are held
            assert (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
        groups = {"idle": idle, "half-sent head": half, "trickling head": trickling,
                  "stalled body": stalled_body, "kept-alive, quiet": kept_alive}
        for name, conns in groups.items():
            results = await asyncio.gather(*(_closed_by_server(r, GIVE_UP_SECS) for r, _ in conns))
            assert all(results), f"{results.count(False)} of {len(conns)} {name} connections were still open " \
                                 f"after {GIVE_UP_SECS:.0f} s"
        assert not any(t.done() and t.exception() for t in trickles)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
    finally:
        for task in trickles:
            task.cancel()
        for _, writer in idle + half + trickling + stalled_body + kept_alive:
            writer.close()


async def test_in_process_server_closes_slow_and_silent_connections(tmp_path):
    settings = load_settings(_env_file=None, port=free_port(), host="127.0.0.1", data_dir=tmp_path, **TIMEOUTS)
    async with serve_locally(settings) as server:
        await _hold_slow_clients(server.port, each=100)
        # A head sent in time is served even if its connection opened a while ago (the deadline
        # is for the head, not a limit on requests): open, wait half the deadline, ask.
        reader, writer = await _open(server.port)
        await asyncio.sleep(TIMEOUTS["http_header_timeout_secs"] / 2)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status.startswith(b"HTTP/1.1 200"), status


@pytest.mark.parametrize("workers", [1, 2])
def test_server_py_closes_slow_and_silent_connections(tmp_path, workers):
    env = {"HTTP_HEADER_TIMEOUT_SECS": "1", "HTTP_IDLE_TIMEOUT_SECS": "1"}
    with server_process(tmp_path, workers, **env) as server:
        asyncio.run(_hold_slow_clients(server.port, each=50))
        assert server.process.poll() is None, "the server kept running"
