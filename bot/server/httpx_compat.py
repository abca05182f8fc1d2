"""httpx without its command-line tool, in a server process.

httpx's `__init__` imports its command-line tool (`httpx._main`, which loads click, rich and
pygments) whenever those are installed, and here they are (the `bot` command uses typer and
rich): ~6 MB of every server process, for a tool a server never runs. Marked absent before
httpx is first imported, the import fails and httpx takes its own fallback (a `main` that
says the command-line extra is missing); nothing else changes. server.py does this first.
tests/test_httpx_compat.py fails when httpx renames the module or stops guarding its import.
"""

from __future__ import annotations

import sys

CLI_MODULE = "httpx._main"


def keep_httpx_cli_out() -> None:
    """Call before anything imports httpx; a no-op once it has been imported."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault(CLI_MODULE, None)  # type: ignore[arg-type]  # None: "not importable"
