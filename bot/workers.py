"""Several worker processes on one port, with calls spread evenly between them.

uvicorn's own `workers=N` binds one socket in a supervisor and lets every worker accept from
it; whichever process wakes first takes the connection, and under load one worker ended up
with 72% of the calls (54 of 75 in bench/capacity.py) while the other idled. Here each worker
binds its own socket with SO_REUSEPORT, so the kernel hashes each new connection to one of
them: an even spread, and a busy worker never steals calls from an idle one.

The supervisor forwards SIGTERM/SIGINT (each worker then finishes its live calls: see the
app's lifespan) and restarts a worker that dies unexpectedly. Where SO_REUSEPORT is missing
(not Linux), uvicorn's shared-socket workers are used instead.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess

import uvicorn
from loguru import logger

from bot.settings import Settings

RESTART_BACKOFF_SECS = 1.0
UVICORN_OPTIONS = {"log_level": "warning", "ws_per_message_deflate": False}  # media is PCM: don't deflate


def reuse_port_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket of this worker's own on host:port, shared with its siblings via SO_REUSEPORT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_worker(host: str, port: int) -> None:
    """One worker process: its own socket, the app built from the environment, uvicorn."""
    from bot.app import create_app_from_env

    os.setpgrp()  # a terminal's Ctrl+C reaches the supervisor only, which forwards one SIGTERM
    sock = listening_socket(host, port)
    config = uvicorn.Config(create_app_from_env(), **UVICORN_OPTIONS)
    uvicorn.Server(config).run(sockets=[sock])


def run_server(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT: in this process, or in WORKERS processes (0 = one per core).

    The app is built here first either way, so a bad campaign file raises CampaignError before
    anything listens or any worker starts."""
    from bot.app import create_app

    app = create_app(settings)
    workers = settings.workers or os.cpu_count() or 1
    if workers == 1:
        uvicorn.run(app, host=settings.host, port=settings.port, **UVICORN_OPTIONS)
    else:
        serve_workers(settings, workers)


def serve_workers(settings: Settings, workers: int) -> None:
    """Run `workers` worker processes until SIGTERM/SIGINT; restart any that die."""
    if not reuse_port_supported():
        uvicorn.run("bot.app:create_app_from_env", factory=True, workers=workers,
                    host=settings.host, port=settings.port, **UVICORN_OPTIONS)
        return
    context = multiprocessing.get_context("spawn")
    stopping = False
    processes: list[BaseProcess] = []

    def start(index: int) -> BaseProcess:
        process = context.Process(target=run_worker, args=(settings.host, settings.port), name=f"worker-{index}")
        process.start()
        return process

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: uvicorn's graceful shutdown, live calls finish

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    processes.extend(start(i) for i in range(workers))
    logger.info(f"serving on {settings.host}:{settings.port} with {workers} worker processes (SO_REUSEPORT)")
    while not stopping:
        time.sleep(0.5)
        for i, process in enumerate(processes):
            if not process.is_alive() and not stopping:
                logger.error(f"worker {process.name} (pid {process.pid}) exited with {process.exitcode}; restarting")
                time.sleep(RESTART_BACKOFF_SECS)
                processes[i] = start(i)
    for process in processes:
        process.join()
