"""Call records as a spreadsheet: the CSV a sales team opens (`GET /calls?format=csv`,
`bot calls export`). Rows are the records' JSON shape (record_json.py)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

CSV_COLUMNS = ["call_sid", "campaign", "status", "outcome", "summary", "started_at", "ended_at",
               "duration_secs", "end_reason", "escalated", "lead", "collected"]


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A cell a spreadsheet shows as text: one starting like a formula gets a leading `'`
    (OWASP's CSV-injection rule). Call ids, summaries and lead fields come from outside."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def calls_csv(rows: list[dict[str, Any]]) -> str:
    """The records as a sales team opens them in a spreadsheet: the call's columns, the lead's
    name and phone, one column per collected detail (`collected.budget`, ...), the transcript
    as text ("bot: ... / caller: ..."), and the whole lead as JSON last. Every cell is
    spreadsheet-safe."""
    details: list[str] = []
    for row in rows:
        details += [key for key in row["collected"] if key not in details]
    columns = [*CSV_COLUMNS[:-2], "lead_name", "lead_phone", *(f"collected.{key}" for key in details),
               "transcript", "lead"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        lead = row["lead"]
        cells = {**row, "lead": json.dumps(lead, ensure_ascii=False),
                 "lead_name": lead.get("name"), "lead_phone": row.get("to_number") or lead.get("phone"),
                 "transcript": transcript_text(row.get("transcript") or []),
                 **{f"collected.{key}": _cell_value(value) for key, value in row["collected"].items()}}
        writer.writerow({column: spreadsheet_safe(cells.get(column)) for column in columns})
    return out.getvalue()


def transcript_text(transcript: list[dict[str, Any]]) -> str:
    """The transcript as lines a person reads: "bot: Hello Rahul..." / "caller: Yes"."""
    speaker = {"assistant": "bot", "user": "caller"}
    return "\n".join(f"{speaker.get(str(e.get('role')), e.get('role'))}: {e.get('text', '')}"
                     + (" (interrupted)" if e.get("interrupted") else "") for e in transcript)


def _cell_value(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value
