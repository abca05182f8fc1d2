"""The offline scripted agent: what it understands of the caller's answers, how it sums up a
"no", and that its closing line is the campaign's (Hinglish for the Hinglish campaign)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config.campaigns import load_campaign
from pipelines.extraction import budget, extract, words_to_numbers

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("said, saved", [
    ("about 3,000 rupees", "3000 rupees"), ("about eighty lakhs", "80 lakhs"), ("one point two crore", "1.2 crore"),
    ("1.5 crore", "1.5 crore"), ("eighty five lakh", "85 lakhs"), ("3,00,000", "300000"),
    ("three thousand rupees", "3000 rupees"),
])
def test_budgets_in_indian_numbers_and_words(said, saved):
    assert budget(said) == saved


def test_numbers_with_thousands_separators_and_multipliers():
    assert words_to_numbers("3,000 and 3,00,000") == [3000, 300000]
    assert words_to_numbers("two hundred and five thousand") == [200, 5000]
    assert extract("bhk", "integer", "two bedrooms please") == 2


def test_the_closing_line_is_the_campaigns_own():
    hinglish = load_campaign(CONFIGS / "hinglish_followup.yaml")
    assert "shukriya" in hinglish.scripted_closing and "Thank you" not in hinglish.scripted_closing
    assert load_campaign(CONFIGS / "real_estate.yaml").scripted_closing.startswith("Thank you")


async def test_no_thanks_to_a_later_question_is_summed_up_as_that():
    from pipelines.call_control import CallControl
    from pipelines.call_session import CallSession
    from pipelines.scripted_agent import ScriptedAgent
    from serializers.exotel_events import StreamStart

    campaign = load_campaign(CONFIGS / "real_estate.yaml")
    session = CallSession.from_handshake(StreamStart(stream_sid="s", call_sid="CA-x"), {})
    control = CallControl(session, campaign)
    ended: list[tuple[str, str]] = []

    async def end_call(outcome: str, summary: str = "") -> None:
        ended.append((outcome, summary))

    control.end_call = end_call  # the hang-up itself needs a pipeline; here only what it is told matters
    agent = ScriptedAgent(campaign, control)
    agent._say = lambda text: _noop()  # questions are spoken by the TTS; not needed here
    for answer in ["Yes", "About eighty lakhs", "Two bedrooms"]:
        await agent._answer(answer)
    await agent._answer("No thanks")
    assert ended and ended[0][0] == "not_interested"
    assert "question 3" in ended[0][1] and "No thanks" in ended[0][1] and "first" not in ended[0][1]


async def _noop() -> None:
    return None
