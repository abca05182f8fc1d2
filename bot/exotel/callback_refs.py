"""The dial ref: what binds Exotel's status callbacks to the one call they are about.

Each dial gets a fresh ref. It goes into the StatusCallback address (signed: bot/exotel/signing.py)
and into the call's CustomField, which the call record keeps; a callback is applied only to
the record whose CustomField carries the ref its address was signed for.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

CUSTOM_FIELD_CHARS = 128  # Exotel's limit


def custom_field(campaign: str, lead: dict[str, Any], ref: str) -> str:
    """<= 128 chars of JSON that find the lead and campaign again: campaign, lead id, dial ref.

    Always whole JSON with the whole ref (the status callback is checked against it): the
    lead id, then the campaign name, are shortened until it fits."""
    name, lead_id = campaign[:40], str(lead.get("id") or "")[:40]
    while True:
        text = json.dumps({"r": ref, "c": name, "l": lead_id}, separators=(",", ":"), ensure_ascii=False)
        if len(text) <= CUSTOM_FIELD_CHARS:
            return text
        if lead_id:
            lead_id = lead_id[:-1]
        else:
            name = name[:-1]


def dial_ref(custom_field_text: str | None) -> str | None:
    """The dial ref inside a CustomField written by `custom_field` (None if there is none)."""
    try:
        data = json.loads(custom_field_text or "")
    except ValueError:
        return None
    ref = data.get("r") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) and ref else None


def ref_matches(custom_field_text: str | None, ref: str) -> bool:
    """True if the call with this CustomField was dialled with `ref` (compared in constant time)."""
    issued = dial_ref(custom_field_text)
    return issued is not None and hmac.compare_digest(issued.encode(), ref.encode())
