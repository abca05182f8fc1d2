"""Start the server: `python server.py` (settings from the environment and `.env`).

WORKERS processes share the listening socket (0 = one per core); whatever one request leaves
for another (a dialled call's lead, a prepared greeting) lives in the database and DATA_DIR.
"""

import os
import sys

import uvicorn

from bot.app import create_app
from bot.campaigns import CampaignError
from bot.logging_setup import setup_logging
from bot.settings import SettingsError, load_settings

if __name__ == "__main__":
    try:
        settings = load_settings()
        setup_logging(settings.log_level)
        create_app(settings)  # fail fast on a bad campaign file, before forking workers
    except (SettingsError, CampaignError) as error:
        sys.exit(f"error: {error}")
    workers = settings.workers or os.cpu_count() or 1
    if workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                    ws_per_message_deflate=False)  # media is incompressible PCM: don't spend CPU on it
    else:
        uvicorn.run("bot.app:create_app_from_env", factory=True, workers=workers,
                    host=settings.host, port=settings.port, log_level="warning", ws_per_message_deflate=False)
