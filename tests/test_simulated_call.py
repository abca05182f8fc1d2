"""The embedded default, end to end: `bot run --lead examples/lead.json` with no accounts and
no keys places a complete simulated call (built-in Exotel simulator, offline STT, scripted
agent, Piper voice) that ends with end_call, a saved record and a stereo recording."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_KEYS = {name: "" for name in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "ELEVENLABS_API_KEY", "EXOTEL_ACCOUNT_SID",
                                  "EXOTEL_SID", "EXOTEL_API_KEY", "EXOTEL_API_TOKEN", "DATABASE_URL")}


def test_bot_run_lead_offline_completes_a_call_with_record_and_recording(tmp_path):
    env = {**os.environ, **NO_KEYS, "DATA_DIR": str(tmp_path), "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "run", "--lead", "examples/lead.json"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "simulating the call" in out and "Whisper" in out and "scripted stand-in" in out
    assert "Hello Rahul" in out, "the greeting names the lead"
    assert out.count("caller ") >= 3, "several caller turns"
    assert "Goodbye" in out and "bot_hangup" in out, "ended by end_call after the goodbye"

    row = sqlite3.connect(tmp_path / "calls.db").execute(
        "select call_sid, status, outcome, end_reason, transcript, collected, recording_path, recording_url "
        "from call_records"
    ).fetchone()
    call_sid, status, outcome, end_reason, transcript, collected, recording, recording_url = row
    assert recording_url is None, "a simulated call's recording is its local WAV, not an exotel.com address"
    assert status == "completed" and end_reason == "bot_hangup"
    assert outcome in ("interested", "not_interested")
    assert len([t for t in json.loads(transcript) if t["role"] == "user"]) >= 3
    assert json.loads(collected), "some lead details were collected"
    with wave.open(recording) as wav:
        assert wav.getnchannels() == 2 and wav.getnframes() / wav.getframerate() > 15
    assert recording in out


def test_a_campaign_given_as_a_path_has_its_scenario_beside_it(tmp_path):
    from bot.simulator.scenario import scenario_for

    assert scenario_for(ROOT / "configs", str(tmp_path / "solar.yaml")) == tmp_path / "solar.scenario.yaml"
    assert scenario_for(ROOT / "configs", "real_estate") == ROOT / "configs" / "real_estate.scenario.yaml"


def test_a_missing_scenario_is_one_line_saying_what_a_scenario_is(tmp_path):
    campaign = tmp_path / "solar.yaml"
    campaign.write_text((ROOT / "configs" / "real_estate.yaml").read_text().replace("name: real_estate", "name: solar"))
    env = {**os.environ, **NO_KEYS, "DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "run", "--lead", "examples/lead.json",
                           "--campaign", str(campaign)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and "solar.scenario.yaml" in lines[-1] and "simulated caller" in lines[-1], done.stderr[-2000:]
