"""Start-up problems are told in one line, never with a password, and never loop: a malformed
or unreachable DATABASE_URL stops `server.py` (one process or several) and the `bot` commands
that use the database before anything listens; worker processes that fail during their
start-up are not restarted, and the supervisor exits when none is left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from bot.server.local_server import free_port
from testing.server_process import OFFLINE, ROOT

PASSWORD = "hunter2-secret"


def _run(args: list[str], tmp_path, within: float = 120.0, **env: str) -> tuple[int, list[str]]:
    """Run a command to its end (bounded; killed if it overruns) -> (exit code, output lines)."""
    full_env = {**os.environ, **OFFLINE, "DATA_DIR": str(tmp_path), "HOST": "127.0.0.1", "PORT": str(free_port()),
                **env}
    process = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        output, _ = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate(timeout=10)
        raise AssertionError(f"{' '.join(args[1:])} still running after {within:.0f} s:\n{output[-3000:]}") from None
    return process.returncode, [line for line in output.splitlines() if line.strip()]


COMMANDS = {
    "server.py WORKERS=2": ([sys.executable, "server.py"], {"WORKERS": "2"}),
    "server.py WORKERS=1": ([sys.executable, "server.py"], {"WORKERS": "1"}),
    "bot calls list": ([sys.executable, "-m", "bot.cli", "calls", "list"], {}),
    "bot run --lead (simulated)": ([sys.executable, "-m", "bot.cli", "run", "--lead", "examples/lead.json"], {}),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("url", ["garbage", f"mysql://user:{PASSWORD}@db.example/calls",
                                 f"postgresql+asyncpg://user:{PASSWORD}@db.example"])
def test_a_malformed_database_url_is_one_line(tmp_path, command, url):
    args, env = COMMANDS[command]
    code, lines = _run(args, tmp_path, DATABASE_URL=url, **env)
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("error:") and "DATABASE_URL" in lines[0], lines
    assert PASSWORD not in lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unreachable_database_stops_start_up_with_one_line(tmp_path, command):
    args, env = COMMANDS[command]
    url = f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:{free_port()}/test"  # nothing listens there
    code, lines = _run(args, tmp_path, DATABASE_URL=url, **env)
    assert code != 0
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: cannot open the database at postgresql+asyncpg://postgres:***@127.0.0.1:")
    assert "(DATABASE_URL)" in lines[0] and "refused" in lines[0].lower() and PASSWORD not in lines[0]


def test_workers_that_fail_during_start_up_are_not_restarted(tmp_path):
    """A worker that exits before it reported ready would fail again: it is not restarted, and
    with none left the supervisor exits non-zero with one line (a campaign whose Piper voice
    file is missing fails in each worker's start-up, after the supervisor's own checks)."""
    campaigns = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", campaigns)
    for path in campaigns.glob("*.yaml"):
        if path.name.endswith(".scenario.yaml"):
            continue
        campaign = yaml.safe_load(path.read_text())
        campaign["tts"] = {**(campaign.get("tts") or {}), "provider": "piper", "voice": str(tmp_path / "gone.onnx")}
        path.write_text(yaml.safe_dump(campaign))
    code, lines = _run([sys.executable, "server.py"], tmp_path, within=180, WORKERS="2",
                       CAMPAIGNS_DIR=str(campaigns))
    log = "\n".join(lines)
    assert code != 0
    assert "; restarting" not in log, log[-3000:]
    gave_up = [line for line in lines if "failed during start-up (exit code" in line and "not restarting" in line]
    assert len(gave_up) == 2, log[-3000:]  # each worker once
    assert lines[-1] == "error: all 2 worker processes failed during start-up (see the log above); not serving"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_default_campaign_that_does_not_exist_stops_start_up_with_one_line(tmp_path, workers):
    code, lines = _run([sys.executable, "server.py"], tmp_path, DEFAULT_CAMPAIGN="nope", WORKERS=workers)
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("error: DEFAULT_CAMPAIGN 'nope'"), lines
    assert "real_estate" in lines[0], "names the campaigns there are"
