"""At start-up the compat checks run (bot/server/app.py create_app): a dependency that lacks a
name calls need stops the server with one line naming the dependency, its version and the
name; one that lacks only a name with a fallback starts, saying what it runs without."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest

from bot.server.local_server import free_port
from pipelines.compat import IncompatibleDependency, clear_cache, require_supported
from testing.server_process import OFFLINE, ROOT


@pytest.fixture
def fresh_check():
    """The check runs once per process: again for this test, and again after it."""
    clear_cache()
    yield
    clear_cache()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_pipecat_without_a_name_calls_need_stops_the_server_with_one_line(tmp_path, workers):
    """As if the installed Pipecat had renamed its websocket input's receive loop (the loop
    the Exotel transport replaces to hear Exotel's stop and the hang-up's marks)."""
    code = (
        "from loguru import logger; logger.remove()\n"  # (Pipecat's banner, imported early here)
        "from pipecat.transports.websocket.fastapi import FastAPIWebsocketInputTransport\n"
        "del FastAPIWebsocketInputTransport._receive_messages\n"
        "import runpy; runpy.run_path('server.py', run_name='__main__')\n"
    )
    env = {**os.environ, **OFFLINE, "DATA_DIR": str(tmp_path), "HOST": "127.0.0.1", "PORT": str(free_port()),
           "WORKERS": workers}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=180)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0
    assert lines == [f"error: not starting, calls need what is missing: pipecat-ai {version('pipecat-ai')} lacks "
                     "FastAPIWebsocketInputTransport._receive_messages (missing) (see pipelines/compat/pipecat.py)"]


def test_create_app_refuses_a_dependency_without_a_name_calls_need(monkeypatch, tmp_path, fresh_check):
    from pipecat.transports.base_output import BaseOutputTransport

    from bot.config.settings import load_settings
    from bot.server.app import create_app

    monkeypatch.delattr(BaseOutputTransport.MediaSender, "_enqueue_flushed_audio_buffer")
    settings = load_settings(_env_file=None, data_dir=tmp_path)
    with pytest.raises(IncompatibleDependency) as refused:
        create_app(settings)
    line = str(refused.value)
    assert "\n" not in line and line.startswith("error: not starting")
    assert f"pipecat-ai {version('pipecat-ai')} lacks BaseOutputTransport.MediaSender._enqueue_flushed_audio_buffer" \
        in line


def test_a_name_with_a_fallback_only_warns(monkeypatch, fresh_check):
    from loguru import logger
    from pipecat.transports.base_input import BaseInputTransport

    from bot.server import uvicorn_compat

    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(message.record["message"]), level="WARNING")
    try:
        monkeypatch.delattr(BaseInputTransport, "_create_audio_task")
        require_supported(uvicorn_compat)  # starts
        require_supported(uvicorn_compat)  # (said once)
    finally:
        logger.remove(sink)
    [warning] = warnings
    assert warning.startswith(f"pipecat-ai {version('pipecat-ai')} lacks BaseInputTransport._create_audio_task")
    assert "running without it" in warning and "caller-audio task runs idle" in warning


def test_the_installed_versions_start(fresh_check):
    from bot.server import uvicorn_compat

    require_supported(uvicorn_compat)
