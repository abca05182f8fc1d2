"""Debian's HAProxy with the shipped config (deploy/haproxy.cfg) in front of test nodes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bot.server.local_server import free_port
from testing.server_process import ROOT

CONFIG = ROOT / "deploy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (make setup installs it with apt)")


@contextmanager
def haproxy(tmp_path: Path, node_ports: list[int], port: int | None = None) -> Iterator[tuple[int, Path]]:
    """The shipped config in front of `node_ports` (listening on `port`, or a free one), plus a
    stats socket (a second -f file) to read which nodes HAProxy counts as up; yields (port, socket path)."""
    assert HAPROXY is not None
    port = port or free_port()
    stats = tmp_path / "haproxy.sock"
    extra = tmp_path / "stats.cfg"
    extra.write_text(f"global\n    stats socket {stats} mode 600 level admin\n")
    env = {**os.environ, "AGENT_BIND": f"127.0.0.1:{port}",
           **{f"AGENT_NODE_{i + 1}": f"127.0.0.1:{p}" for i, p in enumerate(node_ports)}}
    log = (tmp_path / "haproxy.log").open("wb")
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(CONFIG), "-f", str(extra)], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        until(lambda: process.poll() is None and stats.exists() and accepts(port), 30, "haproxy did not start")
        yield port, stats
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
