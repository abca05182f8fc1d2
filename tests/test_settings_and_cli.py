"""Settings fail at start-up with one line naming the setting; server.py and the CLI start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.config.campaigns import CampaignBook, CampaignError, load_campaign
from bot.config.settings import Settings, SettingsError, load_settings
from bot.server.local_server import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"EXOTEL_PAYLOAD_BYTES": "3000"}, "EXOTEL_PAYLOAD_BYTES"),
        ({"EXOTEL_SAMPLE_RATE": "11025"}, "EXOTEL_SAMPLE_RATE"),
        ({"PUBLIC_BASE_URL": "ftp://x"}, "PUBLIC_BASE_URL"),
        ({"MEDIA_AUTH_USER": "exotel"}, "MEDIA_AUTH_PASSWORD"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"LIVE_CALL_LIMIT": "-1"}, "LIVE_CALL_LIMIT"),
        ({"OBJECT_STORE_URL": "https://bucket.example/x"}, "OBJECT_STORE_URL"),
        ({"OBJECT_STORE_URL": "s3://Bad_Bucket/x"}, "OBJECT_STORE_URL"),
        ({"OBJECT_STORE_URL": "s3://bucket/../etc"}, "OBJECT_STORE_URL"),
        ({"OBJECT_STORE_ENDPOINT": "minio:9000"}, "OBJECT_STORE_ENDPOINT"),
    ],
)
def test_bad_setting_is_one_line_naming_it(monkeypatch, env, names):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as error:
        load_settings(_env_file=None)
    message = str(error.value)
    assert "\n" not in message
    assert names in message


def test_defaults_and_env_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PORT=9123\nMEDIA_AUTH_USER=a\nMEDIA_AUTH_PASSWORD=b\n")
    settings = load_settings()
    assert settings.port == 9123 and settings.media_auth_enabled
    assert Settings(_env_file=None).port == 8000


def test_env_example_lists_every_setting():
    listed = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert {name.upper() for name in Settings.model_fields} <= listed


def test_server_py_starts_and_answers_health():
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    process = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(process.stdout.read().decode() if process.poll() is not None else "no answer")
        assert response.json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_server_py_bad_setting_exits_with_one_line():
    env = {**os.environ, "PORT": "nope"}
    done = subprocess.run([sys.executable, "server.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "error: invalid setting: PORT" in done.stderr
    assert "Traceback" not in done.stderr


def test_campaign_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("greeting: ''\ntts: {provider: nope}\n")
    with pytest.raises(CampaignError) as error:
        load_campaign(bad)
    assert str(bad) in str(error.value) and "greeting" in str(error.value)
    assert "\n" not in str(error.value)
    folder = tmp_path / "book"
    folder.mkdir()
    (folder / "typo.yaml").write_text("greeting: hi\ngreting: hi\n")
    with pytest.raises(CampaignError, match="typo.yaml: greting: unknown key"):
        CampaignBook(folder)
    with pytest.raises(CampaignError, match="not valid YAML"):
        (tmp_path / "x.yaml").write_text("a: [")
        load_campaign(tmp_path / "x.yaml")


def test_a_typo_in_a_required_key_is_told_as_unknown_first_with_a_suggestion(tmp_path):
    shipped = (ROOT / "configs" / "real_estate.yaml").read_text()
    typo = tmp_path / "typo.yaml"
    typo.write_text(shipped.replace("\ngreeting:", "\ngreting:", 1))
    with pytest.raises(CampaignError) as error:
        load_campaign(typo)
    assert str(error.value) == (f"{typo}: greting: unknown key (did you mean 'greeting'?); "
                                "greeting: Field required")
    nested = tmp_path / "nested.yaml"
    nested.write_text(shipped.replace("  min_words:", "  min_wrds:", 1))
    with pytest.raises(CampaignError, match=r"turn_taking.min_wrds: unknown key \(did you mean 'min_words'\?\)$"):
        load_campaign(nested)


def test_shipped_campaign_renders_the_lead():
    book = CampaignBook(ROOT / "configs")
    campaign = book.get("real_estate", "real_estate")
    assert "Hello Rahul," in campaign.render_greeting({"name": "Rahul"})
    assert "Hello," in campaign.render_greeting({})  # a missing field never breaks the call


@pytest.mark.parametrize("template, lead, said", [
    ("Thank you for your time, {lead.name}. Have a great day.", {}, "Thank you for your time. Have a great day."),
    ("Thank you for your time, {lead.name}. Have a great day.", {"name": "Rahul"},
     "Thank you for your time, Rahul. Have a great day."),
    ("Hello {lead.name}, this is Priya.", {}, "Hello, this is Priya."),
    ("{lead.name}, we called about the flats.", {}, "We called about the flats."),
    ("Is this {lead.name}? Great.", {}, "Is this? Great."),
])
def test_a_template_over_a_missing_lead_field_reads_cleanly(template, lead, said):
    from bot.config.campaigns import render_template

    assert render_template(template, lead) == said


def test_cli_demo_runs_a_full_offline_call():
    done = subprocess.run([sys.executable, "-m", "bot.cli", "demo"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "protocol violations: 0" in done.stdout
    assert "barge-in: 1 clear(s)" in done.stdout
    wav = done.stdout.strip().splitlines()[-1].split(": ", 1)[1]
    assert Path(wav).stat().st_size > 8000 * 2 * 3


def test_every_shipped_campaign_loads_and_renders():
    book = CampaignBook(ROOT / "configs")
    assert {"real_estate", "hinglish_followup"} <= set(book.names())
    for campaign in book.all():
        prompt = campaign.render(campaign.system_prompt, {"name": "Asha", "city": "Pune"})
        assert "Asha" in prompt and "{" not in prompt
        assert campaign.lead_fields and "error" in campaign.outcomes
        assert "Asha" in campaign.render_greeting({"name": "Asha"})


def test_campaign_dtmf_keys_and_field_types_are_checked(tmp_path):
    bad = tmp_path / "bad_dtmf.yaml"
    bad.write_text("greeting: hi\ndtmf: {'10': end_call}\n")
    with pytest.raises(CampaignError, match="dtmf: DTMF keys"):
        load_campaign(bad)
    bad.write_text("greeting: hi\nlead_fields: [{name: budget, type: money}]\n")
    with pytest.raises(CampaignError, match="lead_fields.0.type"):
        load_campaign(bad)


def test_sigterm_finishes_live_calls_records(tmp_path):
    """A server stopped mid-call (deploy, scale-in) still completes the call's record (the call
    outlives a 1 s shutdown grace: it is ended with the apology; tests/test_drain.py has more)."""
    import asyncio
    import signal
    import sqlite3

    from bot.simulator.exotel_emulator import EmulatorConfig, ExotelEmulator

    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(tmp_path),
           "SHUTDOWN_GRACE_SECS": "1"}
    process = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        emulator = ExotelEmulator(EmulatorConfig(url=f"ws://127.0.0.1:{port}/media", call_sid="CA-sigterm",
                                                 max_secs=20))

        async def call_then_stop():
            running = asyncio.create_task(emulator.run([]))
            await asyncio.sleep(2.0)
            process.send_signal(signal.SIGTERM)
            return await running

        result = asyncio.run(call_then_stop())
        assert process.wait(timeout=30) is not None
    finally:
        if process.poll() is None:
            process.kill()
    assert result.closed_by == "server"
    row = sqlite3.connect(tmp_path / "calls.db").execute(
        "select status, end_reason, transcript from call_records where call_sid = 'CA-sigterm'").fetchone()
    assert row is not None, "the record was written"
    assert row[0] == "completed" and row[1] == "server_shutdown"


def test_readme_says_what_the_code_does():
    """The README claims a newcomer acts on, checked against the code they describe."""
    from typer.main import get_command

    from bot.cli import app
    from bot.config.settings import Settings

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    default_workers = Settings(_env_file=None).workers
    assert f"default {default_workers}, 0 = two per core" in readme
    assert f"WORKERS={default_workers}" in (root / ".env.example").read_text()
    assert "bot demo" in readme and "demo" in get_command(app).commands
    assert "simulator's own Piper voice (not real callers)" in readme, "where the offline WER was measured"
    assert "seed" not in readme.lower(), "name what is meant, e.g. 'the older POST /call API'"
    assert "espeak-ng's Hindi voice" in readme, "which offline voice a Hindi campaign gets"


def test_readme_layout_names_every_package_and_only_packages_that_exist():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("## Tests")]
    named = {line.split()[0].rstrip("/") for line in layout.splitlines()
             if line and not line.startswith((" ", "`", "#")) and line.split()[0].endswith("/")}
    packages = {str(init.parent.relative_to(root)) for top in ("bot", "pipelines", "serializers", "testing")
                for init in (root / top).rglob("__init__.py")
                if "migrations" not in init.parts and init.parent != root / "bot"}
    assert packages <= named, f"packages missing from README's layout: {sorted(packages - named)}"
    assert all((root / name).is_dir() for name in named), [n for n in named if not (root / n).is_dir()]
