"""The server keeps httpx's command-line tool (click, rich, pygments) out of its processes
(bot/server/httpx_compat.py); these fail when httpx renames the module or stops guarding it."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import httpx

from bot.server.httpx_compat import CLI_MODULE

ROOT = Path(__file__).resolve().parent.parent


def test_httpx_still_names_its_command_line_tool_as_the_server_expects():
    assert importlib.util.find_spec(CLI_MODULE) is not None
    source = inspect.getsource(httpx)
    guarded = source.split("from ._main import main", 1)
    assert len(guarded) == 2 and "except ImportError" in guarded[1].splitlines()[1], (
        "httpx no longer imports its CLI inside try/except ImportError: keep_httpx_cli_out() would break httpx")


def test_a_server_process_imports_httpx_without_its_command_line_tool():
    code = (
        "import sys\n"
        "from bot.server.httpx_compat import keep_httpx_cli_out\n"
        "keep_httpx_cli_out()\n"
        "import httpx\n"
        "assert httpx.AsyncClient and httpx.main\n"
        "print(sorted(m for m in ('rich', 'pygments', 'httpx._main') if m in sys.modules and sys.modules[m]))\n"
    )
    blocked = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert blocked.returncode == 0, blocked.stderr
    assert blocked.stdout.strip() == "[]"
    # Without it, httpx loads the tool (what the call above saves), so the check can fail.
    plain = subprocess.run([sys.executable, "-c", "import sys, httpx; print('rich' in sys.modules)"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "True"


def test_server_py_keeps_the_tool_out_before_anything_imports_httpx():
    code = ("import runpy, sys; runpy.run_path('server.py', run_name='not_main'); import bot.server.app; "
            "print('httpx' in sys.modules, 'rich' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True False"
