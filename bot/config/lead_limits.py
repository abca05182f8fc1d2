"""How big a lead may be: every field of it can reach the caller's ear or the LLM's prompt.

A lead's fields are rendered into the greeting, the goodbye and the system prompt, so a field
of a few kilobytes becomes a minute of synthesized speech or a prompt that costs every turn,
and a lead nested hundreds of levels deep breaks JSON encoders downstream (the record store,
the API's listings). Leads from the API, a lead file, a CSV campaign or the media stream's
custom parameters all pass `check_lead` before anything is dialled or stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

MAX_NAME_CHARS = 80
MAX_ID_CHARS = 100  # the record store's lead_id column
MAX_KEY_CHARS = 64
MAX_LEAD_BYTES = 16 * 1024  # the whole lead as compact JSON (UTF-8)
MAX_DEPTH = 4  # the lead itself is level 1: {"a": {"b": {"c": {}}}} is 4 deep


class LeadError(ValueError):
    """A lead outside the bounds; the message is one line that names the field."""


def check_lead(lead: Any) -> dict[str, Any]:
    """The lead as a plain JSON-ready dict, or LeadError naming what breaks the bounds.

    Checked: a JSON object with string keys (<= 64 characters), nested at most MAX_DEPTH
    levels, only JSON values (finite numbers), `name` a string of at most MAX_NAME_CHARS,
    `id` at most MAX_ID_CHARS, and at most MAX_LEAD_BYTES as compact JSON. The depth is
    checked without recursion, so a hostile lead cannot exhaust the stack."""
    if not isinstance(lead, Mapping):
        raise LeadError("lead must be a JSON object")
    _check_shape(lead)
    name = lead.get("name")
    if name is not None and not isinstance(name, str):
        raise LeadError("lead.name must be a string")
    if isinstance(name, str) and len(name) > MAX_NAME_CHARS:
        raise LeadError(f"lead.name is {len(name)} characters; at most {MAX_NAME_CHARS}")
    for key in ("id", "lead_id"):
        value = lead.get(key)
        if value is not None and len(str(value)) > MAX_ID_CHARS:
            raise LeadError(f"lead.{key} is {len(str(value))} characters; at most {MAX_ID_CHARS}")
    size = len(json.dumps(lead, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_LEAD_BYTES:
        raise LeadError(f"lead is {size} bytes as JSON; at most {MAX_LEAD_BYTES}")
    return dict(lead)


def _check_shape(lead: Mapping[str, Any]) -> None:
    """Depth, key and value types, iteratively (no recursion on untrusted nesting)."""
    pending: list[tuple[Any, int, str]] = [(lead, 1, "lead")]
    seen = 0
    while pending:
        value, depth, where = pending.pop()
        seen += 1
        if seen > MAX_LEAD_BYTES:  # every value takes at least a byte of the JSON
            raise LeadError(f"lead has more than {MAX_LEAD_BYTES} values")
        if isinstance(value, Mapping) or isinstance(value, list):
            if depth > MAX_DEPTH:
                raise LeadError(f"{where} is nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise LeadError(f"{where} has a key that is not a string")
                    if len(key) > MAX_KEY_CHARS:
                        raise LeadError(f"{where} has a key of {len(key)} characters; at most {MAX_KEY_CHARS}")
                    pending.append((item, depth + 1, f"{where}.{key}"))
            else:
                pending.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise LeadError(f"{where} is not a finite number")
        elif not (value is None or isinstance(value, (str, int, bool))):
            raise LeadError(f"{where} is not a JSON value ({type(value).__name__})")
