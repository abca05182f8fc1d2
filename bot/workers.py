"""Several worker processes on one port, with calls spread by load between them.

The supervisor owns the listening socket and hands each accepted connection to the worker
with the fewest live connections (bot/connection_handoff.py): a call lasts minutes, and
neither SO_REUSEPORT's random hashing (runs of 100 calls split up to 62/38) nor uvicorn's
shared accept socket (54 of 75 calls to one worker) kept two workers evenly loaded.

WORKERS=0 runs two workers per core. Each worker's event loop serves its calls one piece of
work at a time, so a burst in one call (a call starting, a GC pass) delays every call on that
loop; with more, smaller workers the kernel's preemptive scheduler interleaves them instead.
Measured with 100 calls on 2 cores (bench/capacity.py): 2 workers had audio gaps and added
p95 320-450 ms; 3 and 4 workers none, and 140-180 ms. A worker costs ~200 MB of memory.

The supervisor forwards SIGTERM/SIGINT as SIGTERM: each worker drains (bot/drain.py: live calls
run to their end, up to SHUTDOWN_GRACE_SECS; /health answers 503 "draining"; new media sockets
are refused) while the supervisor keeps handing it connections, so a load balancer's health
checks still get an answer. Draining workers are not restarted; the supervisor exits once
every worker has finished. A second signal stops the workers at once. A worker that dies
unexpectedly is restarted. Where passing sockets between
processes is not available (not Linux), uvicorn's shared-socket workers are used instead.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess

from loguru import logger

from bot.app_server import AppServer, server_config
from bot.connection_handoff import ConnectionBalancer, HandoffServer
from bot.settings import Settings

RESTART_BACKOFF_SECS = 1.0


def handoff_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def run_worker(channel: socket.socket) -> None:
    """One worker process: the app built from the environment, serving handed-over connections."""
    from bot.app import create_app_from_env

    os.setpgrp()  # a terminal's Ctrl+C reaches the supervisor only, which forwards one SIGTERM
    app = create_app_from_env()
    HandoffServer(server_config(app, app.state.settings), channel, drain=app.state.drain).run()


def worker_count(setting: int) -> int:
    """WORKERS as a number of processes: 0 means two per core (see the module's docstring)."""
    return setting or 2 * (os.cpu_count() or 1)


def run_server(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT: in this process, or in WORKERS processes (0 = two per core).

    The app is built here first either way, so a bad campaign file raises CampaignError before
    anything listens or any worker starts."""
    from bot.app import create_app

    app = create_app(settings)
    workers = worker_count(settings.workers)
    if workers == 1:
        AppServer(server_config(app, settings, host=settings.host, port=settings.port), drain=app.state.drain).run()
    else:
        serve_workers(settings, workers)


def serve_workers(settings: Settings, workers: int) -> None:
    """Run `workers` worker processes until SIGTERM/SIGINT and their drain; restart any that die."""
    if not handoff_supported():
        from uvicorn.supervisors import Multiprocess

        config = server_config("bot.app:create_app_from_env", settings, factory=True, workers=workers,
                               host=settings.host, port=settings.port)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    context = multiprocessing.get_context("spawn")
    signals_received = 0
    processes: list[BaseProcess] = []
    balancer = ConnectionBalancer(listening_socket(settings.host, settings.port))

    def start(index: int) -> BaseProcess:
        ours, theirs = socket.socketpair()
        process = context.Process(target=run_worker, args=(theirs,), name=f"worker-{index}")
        process.start()
        theirs.close()
        balancer.attach(index, ours)
        return process

    def stop(signum, _frame) -> None:
        nonlocal signals_received
        signals_received += 1
        at_once = signals_received > 1  # a worker that has SIGTERM takes SIGINT as "now"
        if at_once:
            logger.warning("second signal: workers stop now, live calls are cut")
        else:
            logger.info(f"stopping: workers finish their live calls (up to {settings.shutdown_grace_secs:g} s; "
                        f"signal again to stop at once)")
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT if at_once else signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    processes.extend(start(i) for i in range(workers))
    logger.info(f"serving on {settings.host}:{settings.port} with {workers} worker processes")
    restart_at: dict[int, float] = {}
    while True:
        balancer.run_for(0.2)  # while workers drain too: they answer health checks with 503
        if signals_received:
            for i, process in enumerate(processes):
                if not process.is_alive() and i in balancer.channels:
                    balancer.detach(i)
            if not any(process.is_alive() for process in processes):
                break
            continue
        for i, process in enumerate(processes):
            if process.is_alive():
                continue
            if i not in restart_at:
                logger.error(f"worker {process.name} (pid {process.pid}) exited with {process.exitcode}; restarting")
                balancer.detach(i)
                restart_at[i] = time.monotonic() + RESTART_BACKOFF_SECS
            elif time.monotonic() >= restart_at[i]:
                del restart_at[i]
                processes[i] = start(i)
    balancer.close()
    for process in processes:
        process.join()
