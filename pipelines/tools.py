"""The agent's tools, offered to the LLM by function calling, with small handlers.

- `save_lead_details(...)`: the campaign's lead fields, validated and merged into the record.
- `end_call(outcome, summary)`: say goodbye, then hang up once it has played.
- `transfer_to_human(reason)`: say the handoff line, flag escalation, close the stream so the
  flow's next applet connects a human.
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import FunctionCallResultProperties
from pipecat.services.llm_service import FunctionCallParams

from bot.config.campaigns import Campaign, LeadField
from pipelines.call_control import CallControl

JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
TRUE_WORDS = {"true", "yes", "y", "haan", "ha", "1"}
FALSE_WORDS = {"false", "no", "n", "nahi", "0"}


def tools_schema(campaign: Campaign) -> ToolsSchema:
    """The three tools, with save_lead_details shaped by the campaign's lead fields."""
    lead_properties: dict[str, Any] = {}
    for field in campaign.lead_fields:
        prop: dict[str, Any] = {"type": JSON_TYPES[field.type], "description": field.description}
        if field.enum:
            prop["enum"] = field.enum
        lead_properties[field.name] = prop
    return ToolsSchema(
        standard_tools=[
            FunctionSchema(
                name="save_lead_details",
                description="Save details the caller just told you. Call it as soon as you learn any.",
                properties=lead_properties or {"notes": {"type": "string", "description": "what you learnt"}},
                required=[],
            ),
            FunctionSchema(
                name="end_call",
                description="End the call: a goodbye is said for you, then the line hangs up.",
                properties={
                    "outcome": {"type": "string", "enum": campaign.outcomes,
                                "description": "how the call went"},
                    "summary": {"type": "string", "description": "one line for the sales team"},
                },
                required=["outcome"],
            ),
            FunctionSchema(
                name="transfer_to_human",
                description="Hand the caller to a human colleague (asked for one, upset, or stuck).",
                properties={"reason": {"type": "string", "description": "why, in a few words"}},
                required=["reason"],
            ),
        ]
    )


def coerce_field(field: LeadField, value: Any) -> Any:
    """The value in the field's type, or ValueError saying why not."""
    if value is None:
        raise ValueError("empty")
    if field.type == "string":
        text = str(value).strip()
        if not text:
            raise ValueError("empty")
        if field.enum and text not in field.enum:
            raise ValueError(f"must be one of {field.enum}")
        return text[:500]
    if field.type == "boolean":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError("must be true or false")
    try:
        number = float(str(value).replace(",", "").strip())
    except ValueError:
        raise ValueError(f"must be a {field.type}") from None
    if field.type == "integer":
        if not number.is_integer():
            raise ValueError("must be a whole number")
        return int(number)
    return number


def merge_lead_details(campaign: Campaign, collected: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Validate `arguments` against the lead fields; merge the good ones into `collected`."""
    fields = {field.name: field for field in campaign.lead_fields}
    saved, rejected = [], {}
    for name, value in arguments.items():
        field = fields.get(name)
        if field is None:
            if not fields and name == "notes" and value:
                collected["notes"] = str(value)[:500]
                saved.append(name)
            else:
                rejected[name] = "unknown field"
            continue
        try:
            collected[name] = coerce_field(field, value)
            saved.append(name)
        except ValueError as error:
            rejected[name] = str(error)
    return {"saved": saved, "rejected": rejected}


class AgentTools:
    """Handlers bound to one call."""

    def __init__(self, campaign: Campaign, control: CallControl):
        self._campaign = campaign
        self._control = control

    def register(self, llm: Any) -> None:
        llm.register_function("save_lead_details", self.save_lead_details)
        llm.register_function("end_call", self.end_call, cancel_on_interruption=False)
        llm.register_function("transfer_to_human", self.transfer_to_human, cancel_on_interruption=False)

    async def save_lead_details(self, params: FunctionCallParams) -> None:
        result = merge_lead_details(self._campaign, self._control.session.collected, dict(params.arguments))
        logger.info(f"lead details saved: {result['saved']} rejected: {result['rejected']}")
        await params.result_callback(result)

    async def end_call(self, params: FunctionCallParams) -> None:
        outcome = str(params.arguments.get("outcome", "")).strip()
        if outcome not in self._campaign.outcomes:
            await params.result_callback({"error": f"outcome must be one of {self._campaign.outcomes}"})
            return
        await params.result_callback(
            {"status": "ending the call"}, properties=FunctionCallResultProperties(run_llm=False)
        )
        await self._control.end_call(outcome, str(params.arguments.get("summary") or "") or None)

    async def transfer_to_human(self, params: FunctionCallParams) -> None:
        await params.result_callback(
            {"status": "transferring"}, properties=FunctionCallResultProperties(run_llm=False)
        )
        await self._control.transfer_to_human(str(params.arguments.get("reason") or "caller asked"))
