"""Campaign files: one YAML per campaign under `configs/`; swap the YAML, get another agent.

The schema is validated by pydantic; a wrong file fails at load with the file, the field
and the reason in one line. Prompts are templates over the lead's fields (`{lead.name}`,
any lead field), `{agent_name}`, `{company}` and `{lead_fields}`.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.config.phone import normalize_indian_phone
from bot.config.yaml_files import load_yaml_model

DEFAULT_OUTCOMES = [
    "interested",
    "not_interested",
    "callback_requested",
    "wrong_number",
    "do_not_call",
    "voicemail",
    "transferred",
    "no_response",
    "error",
]


class CampaignError(ValueError):
    """A campaign file is missing or invalid; the message is one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class STTConfig(_Strict):
    """Speech to text. `deepgram` needs DEEPGRAM_API_KEY (`offline` is the local stand-in)."""

    provider: Literal["deepgram", "offline"] = "deepgram"
    model: str = "nova-3"
    language: str = "en-IN"
    keyterms: list[str] = Field(default_factory=list)
    endpointing_ms: int = Field(300, ge=10, le=5000)
    smart_format: bool = True
    stream_silence: bool = Field(
        False, description="send the STT the caller's audio even while the line is too quiet to hold "
        "speech the VAD would act on (by default it is held back, bar 0.5 s before speech and 1.5 s after)")


class LLMConfig(_Strict):
    """The language model. `openai` needs OPENAI_API_KEY (`scripted` is the local stand-in)."""

    provider: Literal["openai", "scripted"] = "openai"
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.3, ge=0.0, le=2.0)
    max_tokens: int = Field(200, ge=16, le=4096)
    timeout_secs: float = Field(8.0, gt=0, le=60)
    retries: int = Field(1, ge=0, le=5)


class TTSConfig(_Strict):
    """Which voice speaks. `elevenlabs` needs ELEVENLABS_API_KEY; `piper` (English) and
    `espeak` (espeak-ng's voices, e.g. `hi`) are offline."""

    provider: Literal["elevenlabs", "piper", "espeak"] = "piper"
    voice: str = "en_US-joe-medium"
    model: str = "eleven_flash_v2_5"
    speed: float = Field(1.0, ge=0.7, le=1.2)


class PhoneRules(_Strict):
    """Which numbers the campaign dials: the countries (ISO codes; the first reads national
    numbers such as `09876543210`) and whether landlines count. Lead lists hold mobiles, so a
    landline-shaped number is more often a typo than a lead."""

    countries: list[str] = Field(default_factory=lambda: ["IN"], min_length=1, max_length=50)
    landlines: bool = False

    @field_validator("countries")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        codes = [code.strip().upper() for code in value]
        unknown = [code for code in codes if code not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown country code(s) {unknown}: use ISO codes such as IN, AE, US")
        return codes

    def normalize(self, raw: str) -> str:
        """`raw` in E.164 if this campaign dials it, else InvalidPhoneNumber (one line)."""
        return normalize_indian_phone(raw, self.countries[0], countries=tuple(self.countries),
                                      landlines=self.landlines)


class VADConfig(_Strict):
    """Silero VAD: how sure, and how long speech/silence must last."""

    confidence: float = Field(0.7, ge=0.1, le=1.0)
    start_secs: float = Field(0.2, ge=0.05, le=2.0)
    stop_secs: float = Field(0.2, ge=0.05, le=3.0)
    min_volume: float = Field(0.6, ge=0.0, le=1.0)


# What callers say to show they are listening, in Indian English and Hindi (romanized).
DEFAULT_BACKCHANNELS = (
    "haan", "haa", "han", "ha", "hmm", "hm", "mm", "mhm", "mmhmm", "uh-huh", "uh", "huh", "okay",
    "ok", "ji", "jee", "right", "yes", "yeah", "yep", "achha", "acha", "accha", "theek", "thik",
    "sure", "correct", "ah", "oh", "bilkul", "sahi", "um", "umm", "mm-hmm", "achchha", "haanji", "hanji", "hai",
    "हाँ", "हां", "जी", "अच्छा", "ठीक", "हम्म", "सही", "बिल्कुल", "ओके", "है",
)


class TurnTakingConfig(_Strict):
    """When the caller's turn starts (barge-in) and ends (the bot answers).

    stop_strategy:
      - `speech_timeout`: answer once VAD saw `vad.stop_secs` of silence, then
        `user_speech_timeout_secs` more, and the STT's final transcript arrived. The same
        wait after every pause, so a caller who stops to think mid-sentence is answered on
        the fragment unless the wait is long for everyone.
      - `transcript_aware` (pipelines/turn_end.py): as `speech_timeout`, but when the final
        transcript stops on a word a sentence cannot end on ("for", "the", "my", "ka", "aur"...)
        the wait after VAD stop is `unfinished_timeout_secs` instead; the caller speaking
        again ends the wait. `wait_on_ambiguous` also waits on postpositions that end short
        answers as often as they continue ("ko", "mein", "se", "pe", "in", "on").
      - `smart_turn`: Pipecat's smart-turn model judges whether the caller finished; waits up
        to `smart_turn_stop_secs` on utterances it thinks unfinished.
    """

    vad: VADConfig = Field(default_factory=VADConfig)
    interruptions: bool = True
    min_words: int = Field(2, ge=1, le=10)
    backchannels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BACKCHANNELS), max_length=100,
        description="words that, said alone while the bot talks, leave it talking (it pauses, then resumes)",
    )
    stop_strategy: Literal["speech_timeout", "transcript_aware", "smart_turn"] = "speech_timeout"
    user_speech_timeout_secs: float = Field(
        0.3, ge=0.0, le=3.0,
        description="speech_timeout, transcript_aware: wait after VAD stop for more words",
    )
    unfinished_timeout_secs: float = Field(
        1.0, ge=0.1, le=5.0,
        description="transcript_aware: wait after VAD stop when the transcript stops mid-sentence",
    )
    wait_on_ambiguous: bool = Field(
        False, description="transcript_aware: also wait on ko/mein/se/pe/par/tak/in/on"
    )
    speculative_llm: bool = Field(
        True, description="transcript_aware: start the LLM on the final transcript while the wait runs "
                          "(its reply is held until the turn ends, withdrawn if the caller goes on)",
    )
    smart_turn_stop_secs: float = Field(1.0, ge=0.1, le=5.0)
    user_turn_stop_timeout_secs: float = Field(3.0, ge=0.5, le=10.0)

    @field_validator("backchannels")
    @classmethod
    def _short_phrases(cls, value: list[str]) -> list[str]:
        for phrase in value:
            if not phrase.strip() or len(phrase) > 40:
                raise ValueError(f"backchannel {phrase[:40]!r}: give a word or short phrase (1-40 characters)")
        return value


class LeadField(_Strict):
    """A detail the agent collects with `save_lead_details`."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: Literal["string", "integer", "number", "boolean"] = "string"
    description: str = ""
    enum: list[str] | None = None


class IdleConfig(_Strict):
    """Silence handling: re-prompt after `reprompt_after_secs`, hang up after `hangup_after_secs`."""

    reprompt_after_secs: float = Field(8.0, ge=1.0, le=120.0)
    reprompt: str = "Sorry, are you still there?"
    max_reprompts: int = Field(2, ge=0, le=10)
    hangup_after_secs: float = Field(25.0, ge=2.0, le=600.0)
    goodbye: str = "I'll let you go now. Thank you, goodbye!"


class FillerConfig(_Strict):
    """A short "Hmm." when the reply is slow, so the caller never hears dead air."""

    enabled: bool = True
    after_ms: int = Field(900, ge=100, le=5000)
    phrases: list[str] = Field(default_factory=lambda: ["Hmm.", "Okay.", "Right."])


class VoicemailConfig(_Strict):
    """Answering machines: recognised from the first thing heard; leave a message, hang up."""

    enabled: bool = True
    phrases: list[str] = Field(
        default_factory=lambda: [
            "leave a message", "leave your message", "after the tone", "after the beep",
            "not available", "voicemail", "is switched off", "cannot be reached",
        ]
    )
    listen_secs: float = Field(6.0, ge=1.0, le=30.0)
    message: str = "Hello {lead.name}, this is {agent_name} from {company}. We'll call you back later."


DTMFAction = Literal["transfer_to_human", "end_call", "repeat"]


class ScriptedQuestion(_Strict):
    """A question the offline scripted agent asks, and the lead field its answer fills."""

    ask: str = Field(min_length=1)
    field: str | None = None


class Campaign(_Strict):
    """A campaign: who the agent is, what it says, how it listens, what it collects."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    agent_name: str = "Priya"
    company: str = "our company"
    language: str = "en-IN"
    system_prompt: str = (
        "You are {agent_name}, calling from {company}. Be brief and polite."
    )
    greeting: str = Field(min_length=1)
    goodbye: str = "Thank you for your time. Goodbye!"
    handoff: str = "Let me connect you to a colleague who can help. Please hold."
    apology: str = "Sorry, we are having a technical problem. We will call you back shortly. Goodbye!"
    stt: STTConfig = Field(default_factory=STTConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    turn_taking: TurnTakingConfig = Field(default_factory=TurnTakingConfig)
    lead_fields: list[LeadField] = Field(default_factory=list)
    outcomes: list[str] = Field(default_factory=lambda: list(DEFAULT_OUTCOMES))
    idle: IdleConfig = Field(default_factory=IdleConfig)
    max_call_secs: float = Field(600.0, ge=10.0, le=3600.0)
    record: bool = Field(False, description="keep a stereo WAV per call (caller left, bot right)")
    phones: PhoneRules = Field(default_factory=PhoneRules)
    webhook_url: str | None = Field(None, description="POSTed the call record after each call (retried)")
    fillers: FillerConfig = Field(default_factory=FillerConfig)
    dtmf: dict[str, DTMFAction] = Field(default_factory=lambda: dict[str, DTMFAction]({"0": "transfer_to_human"}))
    voicemail: VoicemailConfig = Field(default_factory=VoicemailConfig)
    scripted_questions: list[ScriptedQuestion | str] = Field(
        default_factory=list,
        description="For the offline scripted agent: the questions it asks in order (a plain "
        "string fills the lead field at the same position).",
    )
    scripted_closing: str = Field(
        "Thank you, that's everything I needed. A colleague will share the details.",
        max_length=300, description="For the offline scripted agent: what it says after the last question.",
    )

    @field_validator("system_prompt", "greeting", "goodbye", "handoff", "apology")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        try:
            list(string.Formatter().parse(value))
        except ValueError as error:
            raise ValueError(f"bad template: {error}") from None
        return value

    @field_validator("dtmf")
    @classmethod
    def _digits(cls, value: dict[str, DTMFAction]) -> dict[str, DTMFAction]:
        bad = [digit for digit in value if not re.fullmatch(r"[0-9*#]", digit)]
        if bad:
            raise ValueError(f"DTMF keys must be one of 0-9 * # (got {bad})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Campaign":
        names = [field.name for field in self.lead_fields]
        if len(names) != len(set(names)):
            raise ValueError("lead_fields: duplicate field names")
        for required in ("error",):
            if required not in self.outcomes:
                self.outcomes.append(required)
        return self

    # ------------------------------------------------------------------ rendering
    def render(self, template: str, lead: dict[str, Any]) -> str:
        """Fill a template with the lead's fields and the campaign's identity."""
        fields = "\n".join(
            f"- {f.name} ({f.type}): {f.description}" for f in self.lead_fields
        )
        return render_template(
            template, lead, agent_name=self.agent_name, company=self.company, lead_fields=fields,
            outcomes=", ".join(self.outcomes),
        )

    def render_greeting(self, lead: dict[str, Any]) -> str:
        return self.render(self.greeting, lead)

    def scripted_plan(self) -> list[ScriptedQuestion]:
        """The scripted agent's questions with the field each one fills."""
        plan = []
        for index, item in enumerate(self.scripted_questions):
            if isinstance(item, str):
                field = self.lead_fields[index].name if index < len(self.lead_fields) else None
                item = ScriptedQuestion(ask=item, field=field)
            plan.append(item)
        return plan


class LeadFields:
    """`{lead.name}` in a template: a missing field renders as an empty string, not an error."""

    def __init__(self, lead: dict[str, Any]):
        self._lead = lead

    def __getattr__(self, name: str) -> str:
        value = self._lead.get(name)
        return "" if value is None else str(value)

    def __format__(self, spec: str) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self._lead.items() if v not in (None, ""))


class _Defaulting(dict):
    def __missing__(self, key: str) -> str:
        return ""


def render_template(template: str, lead: dict[str, Any], **extra: str) -> str:
    """Render; tidy what a missing field leaves behind: "Hello , x" -> "Hello, x", "your time,
    . Have" -> "your time. Have", ", we called" at a sentence's start -> "We called"."""
    text = template.format_map(_Defaulting(lead=LeadFields(lead), **extra))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "\n".join(lines).strip()
    text = re.sub(r" ([,.?!])", r"\1", text)
    text = re.sub(r",+([.?!])", r"\1", text)  # "time,." -> "time."
    text = re.sub(r"([.?!]),", r"\1", text)  # "Hello?," -> "Hello?"
    return re.sub(r"(^|[.?!] )[,;:] ?(\w)", lambda m: m.group(1) + m.group(2).upper(), text, flags=re.M)


def load_campaign(path: Path) -> Campaign:
    """Read and validate one campaign file (its name defaults to the file's)."""
    return load_yaml_model(path, Campaign, CampaignError, defaults={"name": path.stem})


class CampaignBook:
    """The campaigns in a folder, loaded once at start-up (read-only afterwards)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._campaigns: dict[str, Campaign] = {}
        if not folder.is_dir():
            raise CampaignError(f"{folder}: campaigns folder not found")
        for path in sorted(folder.glob("*.yaml")):
            if path.name.endswith(".scenario.yaml"):
                continue
            campaign = load_campaign(path)
            self._campaigns[campaign.name] = campaign

    def get(self, name: str | None, default: str) -> Campaign:
        """The named campaign, else the default; CampaignError if neither exists."""
        for candidate in (name, default):
            if candidate and candidate in self._campaigns:
                return self._campaigns[candidate]
        raise CampaignError(f"no campaign {name or default!r} in {self.folder}")

    def names(self) -> list[str]:
        return sorted(self._campaigns)

    def require(self, name: str, setting: str) -> None:
        """Fail start-up on a setting naming a campaign that isn't there (not every call later)."""
        if name not in self._campaigns:
            raise CampaignError(f"{setting} {name!r}: no such campaign in {self.folder} "
                                f"(there: {', '.join(self.names()) or 'none'})")

    def all(self) -> list[Campaign]:
        return [self._campaigns[name] for name in self.names()]
