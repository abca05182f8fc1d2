"""Start the server: `python server.py` (settings from the environment and `.env`).

WORKERS processes (0 = two per core); the supervisor hands each new connection to the worker
with the fewest (bot/server/workers.py); whatever one request leaves for another (a dialled call's
lead, a prepared greeting) lives in the database and DATA_DIR.
"""

import sys

from bot.server.httpx_compat import keep_httpx_cli_out

keep_httpx_cli_out()  # before anything imports httpx

from bot.config.campaigns import CampaignError  # noqa: E402
from bot.config.logging_setup import setup_logging  # noqa: E402
from bot.config.settings import SettingsError, load_settings  # noqa: E402
from bot.server.workers import WorkerStartupFailed, run_server  # noqa: E402
from bot.store.database_check import DatabaseUnavailable  # noqa: E402

if __name__ == "__main__":
    try:
        settings = load_settings()
        setup_logging(settings.log_level)
        run_server(settings)  # a bad campaign file or database fails here, before anything listens
    except (SettingsError, CampaignError, DatabaseUnavailable, WorkerStartupFailed) as error:
        sys.exit(f"error: {error}")
