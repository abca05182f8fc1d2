"""The CLI dials and follows a call (`bot run --lead`), runs a campaign from a CSV
(`bot run --leads`), and reads records (`bot calls ...`), sharing the server's database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bot.cli.runs import run_campaign, run_one_lead
from bot.simulator.caller_speech import speak
from bot.simulator.exotel_emulator import HangUp, Say
from testing.dialling import dialling_server, write_csv

ROOT = Path(__file__).resolve().parent.parent


async def test_bot_run_lead_dials_follows_and_prints_the_outcome(tmp_path, capsys):
    lead = tmp_path / "lead.json"
    lead.write_text(json.dumps({"id": "L-1", "name": "Rahul", "phone": "+91 98765 43210"}))
    # The caller speaks once the greeting has named them (the transcript has what was heard).
    script = [Say(at=3.0, pcm=speak("Hello who is this")), HangUp(at=5.0)]
    async with dialling_server(tmp_path, "answered") as (server, exotel):
        exotel.caller_script = lambda number: script
        code = await run_one_lead(server.settings, lead, "real_estate")
        await exotel.drain()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "calling +91******3210" in out
    assert "status: completed" in out
    assert "bot    Hello Rahul" in out, "the live transcript names the lead"
    assert exotel.calls[0].form["From"] == "+919876543210"


async def test_bot_run_leads_runs_a_campaign_with_a_summary(tmp_path, capsys):
    csv_path = write_csv(tmp_path / "leads.csv", ["A,Asha,9876500001,", "B,Bad,12,", "C,Chetan,9876500003,"])
    async with dialling_server(tmp_path, ["busy", "answered", "answered"]) as (server, exotel):
        code = await run_campaign(server.settings, csv_path, "real_estate", concurrency=2, calls_per_minute=100,
                                  window="00:00-23:59", timezone="Asia/Kolkata", max_attempts=2,
                                  retry_delay=0.2, dnc=None)
        await exotel.drain()
    out = capsys.readouterr().out
    assert code == 0
    assert "line 3" in out and "invalid phone number" in out
    assert "campaign summary" in out and "done: 2" in out


def test_bot_calls_list_show_export(tmp_path):
    import asyncio

    from bot.config.settings import load_settings
    from bot.store import CallStore

    async def seed():
        settings = load_settings(_env_file=None, data_dir=tmp_path)
        store = await CallStore.open(settings.database_url, migrate=True)
        await store.record_dialled("CA-1", "real_estate", {"id": "L-1", "name": "Asha"}, "+919876500001")
        await store.apply_status({"CallSid": "CA-1", "Status": "busy"})
        await store.close()

    asyncio.run(seed())
    env = {**os.environ, "DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    bot = [sys.executable, "-m", "bot.cli"]
    listed = subprocess.run([*bot, "calls", "list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    shown = subprocess.run([*bot, "calls", "show", "CA-1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    missing = subprocess.run([*bot, "calls", "show", "nope"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    exported = subprocess.run([*bot, "calls", "export", "--csv"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "CA-1" in listed.stdout and "busy" in listed.stdout
    assert json.loads(shown.stdout)["lead"]["name"] == "Asha"
    assert missing.returncode == 1
    assert exported.stdout.splitlines()[1].startswith("CA-1,real_estate,busy")
    # (`bot run --leads` without Exotel credentials runs on the simulator: tests/test_campaign_run.py)
