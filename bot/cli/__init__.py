"""The `bot` command line: `main` (commands), `runs` (dialling and following calls), `services`, `demo`."""

from bot.cli.main import app

__all__ = ["app"]
