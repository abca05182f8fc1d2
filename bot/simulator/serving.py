"""What every aiohttp-based fake does to start and stop: serve an app on a loopback port
(0 = any free one) and cancel the requests still in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiohttp import web


async def serve_app(app: web.Application, host: str = "127.0.0.1", port: int = 0,
                    **runner_options) -> tuple[web.AppRunner, int]:
    """Start `app`; returns its runner (cleanup() stops it) and the port it listens on."""
    options = {"handle_signals": False, "access_log": None, "shutdown_timeout": 1.0} | runner_options
    runner = web.AppRunner(app, **options)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner, runner.addresses[0][1]


async def cancel_all(tasks: Iterable[asyncio.Task]) -> None:
    """Cancel `tasks` and wait until each has finished."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
