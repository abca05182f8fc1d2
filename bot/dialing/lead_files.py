"""Reading a campaign's leads CSV and its do-not-call list, row by row, with every bad row
reported by its line number instead of stopping the file."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from bot.config.campaigns import PhoneRules
from bot.config.lead_limits import LeadError, check_lead
from bot.config.phone import InvalidPhoneNumber, mask_phone, normalize_indian_phone
from bot.dialing.campaign_options import known_timezone
from bot.store import LeadInput

PHONE_COLUMNS = ("phone", "to", "number", "mobile", "phone_number")
MAX_LEADS_PER_FILE = 200_000  # a day at Exotel's 200 calls a minute is 288,000
MAX_LEAD_ID_CHARS = 100


@dataclass
class BadRow:
    line: int
    reason: str


def read_leads(path: Path, dnc: frozenset[str], phones: PhoneRules | None = None,
               ) -> tuple[list[LeadInput], list[BadRow], int]:
    """The leads of a CSV file (see `read_lead_rows`)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return read_lead_rows(handle, str(path), dnc, phones)


def read_lead_rows(handle: Iterable[str], label: str, dnc: frozenset[str], phones: PhoneRules | None = None,
                   ) -> tuple[list[LeadInput], list[BadRow], int]:
    """Parse the CSV: a phone column (phone/to/number/mobile), optional id, name, timezone,
    anything else kept on the lead. Bad rows come back with their line number; a number the
    campaign's `phones` rules do not dial is a bad row."""
    phones = phones or PhoneRules()
    leads, bad, skipped = [], [], 0
    seen: set[str] = set()
    reader = csv.DictReader(handle)
    if not reader.fieldnames or not any(c.strip().lower() in PHONE_COLUMNS for c in reader.fieldnames):
        raise ValueError(f"{label}: no phone column (one of {', '.join(PHONE_COLUMNS)})")
    if any("\0" in name for name in reader.fieldnames):
        raise ValueError(f"{label}: a NUL character in the header (is it a text CSV file?)")
    for count, row in enumerate(reader, start=1):
        if count > MAX_LEADS_PER_FILE:
            raise ValueError(f"{label}: more than {MAX_LEADS_PER_FILE} leads in one file (split it)")
        line = reader.line_num
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
        if any("\0" in value for value in row.values()):  # the csv module reads NULs since Python 3.11
            bad.append(BadRow(line, "a NUL character in the row (is it a text CSV file?)"))
            continue
        raw = next((row[c] for c in PHONE_COLUMNS if row.get(c)), "")
        try:
            phone = phones.normalize(raw)
        except InvalidPhoneNumber as error:  # shown to whoever wrote the file, never logged
            bad.append(BadRow(line, error.for_user))
            continue
        if phone in dnc:
            skipped += 1
            continue
        lead_id = row.get("id") or row.get("lead_id") or phone
        if len(lead_id) > MAX_LEAD_ID_CHARS:
            bad.append(BadRow(line, f"lead id longer than {MAX_LEAD_ID_CHARS} characters"))
            continue
        if lead_id in seen:
            bad.append(BadRow(line, f"duplicate lead {lead_id!r}"))
            continue
        if row.get("timezone") and not known_timezone(row["timezone"]):
            bad.append(BadRow(line, f"unknown time zone {row['timezone'][:40]!r}"))
            continue
        payload = {k: v for k, v in row.items() if k not in PHONE_COLUMNS and v}
        payload["id"] = lead_id
        try:
            check_lead(payload)
        except LeadError as error:
            bad.append(BadRow(line, str(error)))
            continue
        seen.add(lead_id)
        leads.append(LeadInput(line_number=line, lead_id=lead_id, phone=phone, payload=payload))
    return leads, bad, skipped


def read_dnc(path: Path | None) -> frozenset[str]:
    """A do-not-call list: one number per line (any format), '#' comments allowed."""
    if path is None:
        return frozenset()
    numbers = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                numbers.add(normalize_indian_phone(line, allow_foreign=True))  # blocks any country
            except InvalidPhoneNumber:
                logger.warning(f"do-not-call list: unreadable entry {mask_phone(line)}")
    return frozenset(numbers)
