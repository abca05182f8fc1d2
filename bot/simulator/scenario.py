"""Simulated-caller scenarios: a YAML of caller lines (with barge-in points) per campaign,
spoken with a local voice by the Exotel emulator when it is the caller's turn."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from bot.config.yaml_files import load_yaml_model
from bot.simulator.exotel_emulator import CallerEvent, Dtmf, HangUp, Reply


class ScenarioError(ValueError):
    """A scenario file is missing or invalid (one line)."""


class ScenarioLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    say: str | None = Field(None, description="What the caller says on their turn.")
    barge_in_after: float | None = Field(None, ge=0.1, description="Cut in this long after the bot starts.")
    after: float = Field(0.7, ge=0.1, description="Quiet after the bot before answering.")
    dtmf: str | None = Field(None, pattern=r"^[0-9*#]$")


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    campaign: str
    voice: str = "en_US-joe-medium"
    lines: list[ScenarioLine] = Field(min_length=1)
    hang_up_after_secs: float = Field(180, ge=5, le=3600, description="Safety net: the caller hangs up.")

    def caller_events(self, sample_rate: int = 8000) -> list[CallerEvent]:
        """The lines as emulator events (speech synthesized now, off any call's audio path)."""
        from bot.simulator.caller_speech import speak

        events: list[CallerEvent] = []
        for line in self.lines:
            if line.say:
                events.append(Reply(pcm=speak(line.say, sample_rate, self.voice), after=line.after,
                                    barge_in_after=line.barge_in_after, text=line.say))
            elif line.dtmf:
                events.append(Dtmf(at=0.0, digit=line.dtmf))
        events.append(HangUp(at=self.hang_up_after_secs))
        return events


def load_scenario(path: Path) -> Scenario:
    if not path.is_file():
        raise ScenarioError(f"{path}: not found: the simulated caller needs a scenario beside the campaign, "
                            f"a YAML of the caller's lines (README: 'The simulated caller')")
    return load_yaml_model(path, Scenario, ScenarioError)


def scenario_for(campaigns_dir: Path, campaign: str) -> Path:
    """The scenario of a campaign: `<name>.scenario.yaml` in the campaigns folder, or, for a
    campaign given as a YAML path, beside that file (`solar.yaml` -> `solar.scenario.yaml`)."""
    if campaign.endswith((".yaml", ".yml")):
        path = Path(campaign)
        return path.with_name(f"{path.stem}.scenario.yaml")
    return campaigns_dir / f"{campaign}.scenario.yaml"
