"""Simple extraction of lead details from what the caller said (for the offline scripted agent).

Forgiving on purpose: the offline recogniser gets about one word in three wrong, so numbers
may come as words ("eighty lakhs", "eighty lack") and yes/no in English or Hindi.
"""

from __future__ import annotations

import re
from typing import Any

UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
         "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
         "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
# Indian English and Hindi multipliers: "three thousand", "do hazaar" (lakh and crore are the
# budget's units, kept as such: "80 lakhs").
MULTIPLIERS = {"hundred": 100, "sau": 100, "thousand": 1000, "hazaar": 1000, "hazar": 1000}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
        "ninety": 90}
YES = {"yes", "yeah", "yep", "sure", "ok", "okay", "haan", "ha", "han", "ji", "definitely", "of course",
       "why not", "would like", "sounds good", "interested", "great"}
NO = {"no", "nope", "nahi", "nahin", "not", "never", "don't", "dont"}
BUSY = ("busy", "later", "call back", "not now", "driving", "meeting")
NOT_INTERESTED = ("not interested", "no thank", "don't call", "do not call", "stop calling", "wrong number")
HUMAN = ("human", "person", "agent", "manager", "someone else", "real person")


def words_to_numbers(text: str) -> list[float]:
    """Every number in `text`, digits or English words ("two", "eighty five", "1.2", "3,000",
    "three thousand")."""
    numbers: list[float] = []
    current: float | None = None
    text = re.sub(r"(?<=\d),(?=\d)", "", text.lower())  # "3,000", "3,00,000"
    for token in re.findall(r"\d+(?:\.\d+)?|[a-z]+", text):
        if re.fullmatch(r"\d+(?:\.\d+)?", token):
            if current is not None:
                numbers.append(current)
            current = float(token)
        elif token in TENS:
            if current is not None:
                numbers.append(current)
            current = TENS[token]
        elif token in UNITS:
            if current is not None and current >= 20 and current % 10 == 0 and UNITS[token] < 10:
                current += UNITS[token]
            else:
                if current is not None:
                    numbers.append(current)
                current = UNITS[token]
        elif token in MULTIPLIERS and current is not None:
            current *= MULTIPLIERS[token]
        elif current is not None:
            numbers.append(current)
            current = None
    if current is not None:
        numbers.append(current)
    return numbers


def yes_or_no(text: str) -> bool | None:
    words = set(re.findall(r"[a-z']+", text.lower()))
    lowered = text.lower()
    if any(phrase in lowered for phrase in NOT_INTERESTED) or words & NO:
        return False
    if words & YES or any(phrase in lowered for phrase in YES if " " in phrase):
        return True
    return None


def budget(text: str) -> str | None:
    """'80 lakhs', '1.2 crore', '3000 rupees' from 'about eighty lakhs' / 'one point two crore' /
    'about 3,000 rupees'."""
    lowered = text.lower().replace("point", ".")
    unit = ("crore" if re.search(r"cror", lowered) else "lakhs" if re.search(r"\bla(k|c)", lowered)
            else "rupees" if re.search(r"rupee|rs\b|₹", lowered) else None)
    whole, dot, fraction = lowered.partition(".")
    numbers = words_to_numbers(whole)
    if not numbers:
        return None
    value = numbers[-1] if dot else numbers[0]
    decimals = words_to_numbers(fraction) if dot else []
    if decimals and decimals[0] < 10 and float(decimals[0]).is_integer():  # "one point two": 1.2
        value += decimals[0] / 10
    shown = str(int(value)) if float(value).is_integer() else str(value)
    return f"{shown} {unit}" if unit else shown


def extract(field_name: str, field_type: str, text: str) -> Any:
    """A value for the field from the caller's words, or None."""
    if field_type == "boolean":
        return yes_or_no(text)
    if field_name == "budget":
        return budget(text)
    if field_type in ("integer", "number"):
        numbers = words_to_numbers(text)
        return (int(numbers[0]) if field_type == "integer" else numbers[0]) if numbers else None
    cleaned = text.strip()
    return cleaned or None


def intent(text: str) -> str | None:
    """'human', 'busy', 'not_interested' or None."""
    lowered = text.lower()
    if any(word in lowered for word in HUMAN):
        return "human"
    if any(word in lowered for word in NOT_INTERESTED):
        return "not_interested"
    if any(word in lowered for word in BUSY):
        return "busy"
    return None
