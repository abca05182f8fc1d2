"""Scripted LLM replies (answers of the fake OpenAI server) and campaign overrides that several
tests use: a short greeting, a quick ElevenLabs fake, a qualifying conversation."""

from __future__ import annotations

from typing import Any

from testing.fakes.openai_chat import Reply, ToolCall

SHORT_GREETING = {"real_estate": {"greeting": "Hello {lead.name}, this is Priya from Sunrise Homes. Got a minute?"}}
EL_FAST = {"ms_per_char": 30}


def user_count(body: dict[str, Any]) -> int:
    return sum(1 for m in body["messages"] if m["role"] == "user")


def last_tool_name(body: dict[str, Any]) -> str | None:
    messages = body["messages"]
    if messages[-1]["role"] != "tool":
        return None
    call_id = messages[-1].get("tool_call_id")
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if call["id"] == call_id:
                return call["function"]["name"]
    return None


def qualifying_agent(body: dict[str, Any]) -> Reply:
    """A scripted LLM: greet -> budget -> bedrooms -> end_call(interested)."""
    users, tool = user_count(body), last_tool_name(body)
    if tool == "save_lead_details":
        if users == 2:
            return Reply(text="Got it. And how many bedrooms are you looking for?")
        return Reply(tool_calls=[ToolCall("end_call", {"outcome": "interested", "summary": "80L, 2BHK"})])
    if users == 1:
        return Reply(text="Great. What is your budget for the apartment?")
    if users == 2:
        return Reply(tool_calls=[ToolCall("save_lead_details", {"budget": "80 lakhs"})])
    return Reply(tool_calls=[ToolCall("save_lead_details", {"bhk": "2", "purpose": "holiday"})])


LONG_REPLY = ("We have two and three bedroom apartments in Whitefield, close to the metro, "
              "with a clubhouse, a pool and a large park, and possession is planned for next year.")
