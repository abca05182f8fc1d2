"""Phone-number helpers shared by logs and records."""

from __future__ import annotations

import re as _re

import phonenumbers as _pn


def mask_phone(number: str | None) -> str | None:
    """Keep the last 4 digits only: `+91******3210`. Logs never carry a full number."""
    if not number:
        return number
    digits = [c for c in number if c.isdigit()]
    if len(digits) <= 4:
        return "*" * len(number)
    keep = 4
    prefix = "+" if number.strip().startswith("+") else ""
    head = "".join(digits[:2]) if prefix and len(digits) > 8 else ""
    return f"{prefix}{head}{'*' * (len(digits) - len(head) - keep)}{''.join(digits[-keep:])}"


# --------------------------------------------------------------------------- normalization

_ALLOWED = _re.compile(r"^[\s(]*\+?[\d\s\-().]+$")  # one "+", before any digit


class InvalidPhoneNumber(ValueError):
    """A phone number that cannot be dialled; the message shows it masked (`mask_phone`)."""


def normalize_indian_phone(raw: str, default_region: str = "IN", *, allow_foreign: bool = False) -> str:
    """Return `raw` in E.164 (`+919876543210`), or raise `InvalidPhoneNumber`.

    Accepts the ways Indian numbers get written: `9876543210`, `09876543210`,
    `+91 98765 43210`, `91-98765-43210`, `0091 98765 43210`, `(080) 4567 8901`
    (landlines are fine when valid), with spaces, dashes, dots and parentheses.
    Rejects letters (phonenumbers would read `1-800-FLOWERS` as digits), numbers that
    are too short or too long, and numbers that are not valid for their region.
    Numbers outside `default_region` are refused unless `allow_foreign=True`
    (an Indian Exotel account dials domestic numbers only).
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhoneNumber("no phone number given")
    text = raw.strip()
    shown = mask_phone(text)
    if not _ALLOWED.match(text):
        raise InvalidPhoneNumber(
            f"invalid phone number {shown!r}: only digits, spaces, '-', '.', '(', ')' and a leading '+' are allowed"
        )
    try:
        parsed = _pn.parse(text, default_region)
    except _pn.NumberParseException as error:
        raise InvalidPhoneNumber(f"invalid phone number {shown!r}: {_parse_reason(error)}") from None
    if not _pn.is_possible_number(parsed):
        reason = _possible_reason(_pn.is_possible_number_with_reason(parsed))
        raise InvalidPhoneNumber(f"invalid phone number {shown!r}: {reason}")
    if not _pn.is_valid_number(parsed):
        raise InvalidPhoneNumber(
            f"invalid phone number {shown!r}: not a valid number for its region"
        )
    region = _pn.region_code_for_number(parsed)
    if not allow_foreign and default_region and region != default_region.upper():
        raise InvalidPhoneNumber(
            f"invalid phone number {shown!r}: a {region or 'non-geographic'} number, "
            f"not {default_region.upper()}"
        )
    return _pn.format_number(parsed, _pn.PhoneNumberFormat.E164)


def _parse_reason(error: "_pn.NumberParseException") -> str:
    return {
        _pn.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        _pn.NumberParseException.NOT_A_NUMBER: "not a phone number",
        _pn.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        _pn.NumberParseException.TOO_SHORT_NSN: "too short",
        _pn.NumberParseException.TOO_LONG: "too long",
    }.get(error.error_type, "not a phone number")


def _possible_reason(reason: int) -> str:
    return {
        _pn.ValidationResult.TOO_SHORT: "too short",
        _pn.ValidationResult.TOO_LONG: "too long",
        _pn.ValidationResult.INVALID_LENGTH: "wrong number of digits",
        _pn.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    }.get(reason, "not a possible number")
