"""Loguru set-up: one line per event, the call_sid on every line, phone numbers masked."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

_PHONE = re.compile(r"(?<![\w.])\+?\d{10,13}(?![\w.])")
FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[call_sid]}</cyan> {message}"
)


def _mask_numbers(record: Record) -> None:
    """Last line of defence: a phone number that slipped into a message keeps 4 digits."""
    message = record["message"]
    if any(ch.isdigit() for ch in message):
        record["message"] = _PHONE.sub(lambda m: "*" * (len(m.group()) - 4) + m.group()[-4:], message)


def setup_logging(level: str = "INFO") -> None:
    """Replace loguru's default sink (idempotent; safe to call from tests)."""
    logger.remove()
    logger.configure(extra={"call_sid": "-"}, patcher=_mask_numbers)
    logger.add(sys.stderr, level=level, format=FORMAT, backtrace=False, diagnose=False)
