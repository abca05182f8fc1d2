"""`python -m bot.cli`: the same commands as `bot`."""

from bot.cli.main import app

app()
