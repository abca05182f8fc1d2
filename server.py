"""Start the server: `python server.py` (settings from the environment and `.env`)."""

import sys

import uvicorn

from bot.app import create_app
from bot.campaigns import CampaignError
from bot.logging_setup import setup_logging
from bot.settings import SettingsError, load_settings

if __name__ == "__main__":
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.exit(f"error: {error}")
    setup_logging(settings.log_level)
    try:
        app = create_app(settings)
    except CampaignError as error:
        sys.exit(f"error: {error}")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
