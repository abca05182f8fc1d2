"""A dialling set-up for tests: the fake Exotel REST API (answering calls with the emulator
that hangs up at once) in front of the real server, and a leads CSV."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.config.settings import load_settings
from bot.exotel.applet import applet_url
from bot.server.local_server import free_port, serve_locally
from bot.simulator.exotel_emulator import HangUp
from bot.simulator.exotel_rest import FakeExotelREST

EXOTEL = {"exotel_account_sid": "acme", "exotel_api_key": "key", "exotel_api_token": "token",
          "exotel_caller_id": "08047112233", "exotel_app_id": "4242"}


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("id,name,phone,timezone\n" + "\n".join(rows) + "\n")
    return path


@asynccontextmanager
async def dialling_server(tmp_path: Path, outcomes, *, settings_overrides: Mapping[str, Any] | None = None,
                          **fake_kwargs):
    """The server and the fake Exotel; `settings_overrides` go to the server's settings (e.g.
    api_token), any other keyword to FakeExotelREST."""
    async with FakeExotelREST(account_sid="acme", api_key="key", api_token="token", outcomes=outcomes,
                              caller_script=lambda number: [HangUp(at=1.2)], ring_secs=0.05,
                              **fake_kwargs) as exotel:
        port = free_port()
        settings = load_settings(_env_file=None, host="127.0.0.1", port=port, data_dir=tmp_path / "data",
                                 public_base_url=f"http://127.0.0.1:{port}",
                                 exotel_api_base_url=exotel.base_url, **{**EXOTEL, **(settings_overrides or {})})
        async with serve_locally(settings) as server:
            exotel.dynamic_url = applet_url(settings, server.app.state.services.signing_key)
            yield server, exotel
