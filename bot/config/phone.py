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
    """A phone number that cannot be dialled.

    `str(error)` shows the number masked (`mask_phone`): that text reaches logs and call
    records. `error.for_user` shows it as typed, for the person who typed it (a CLI error
    line, an API response), who cannot fix `'*2345'`."""

    def __init__(self, reason: str, typed: str | None = None) -> None:
        self.reason = reason
        self.typed = typed
        super().__init__(f"invalid phone number {mask_phone(typed)!r}: {reason}" if typed else reason)

    @property
    def for_user(self) -> str:
        """The error with the number unmasked (cut at 40 characters: a cell can be anything)."""
        if not self.typed:
            return self.reason
        shown = self.typed if len(self.typed) <= 40 else self.typed[:40] + "..."
        return f"invalid phone number {shown!r}: {self.reason}"


def normalize_indian_phone(raw: str, default_region: str = "IN", *, allow_foreign: bool = False,
                           countries: tuple[str, ...] | None = None, landlines: bool = True) -> str:
    """Return `raw` in E.164 (`+919876543210`), or raise `InvalidPhoneNumber`.

    Accepts the ways Indian numbers get written: `9876543210`, `09876543210`,
    `+91 98765 43210`, `91-98765-43210`, `0091 98765 43210`, `(080) 4567 8901`
    (landlines are fine when valid), with spaces, dashes, dots and parentheses.
    Rejects letters (phonenumbers would read `1-800-FLOWERS` as digits), numbers that
    are too short or too long, and numbers that are not valid for their region.
    Numbers outside `default_region` are refused unless `allow_foreign=True`
    (an Indian Exotel account dials domestic numbers only), or outside `countries` when given.
    With `landlines=False` only mobiles are dialled: `+91 12345 67890` is a valid Baghpat
    landline, not the mobile a lead list means; toll-free, premium and shared-cost numbers
    are never dialled.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhoneNumber("no phone number given")
    text = raw.strip()
    if not _ALLOWED.match(text):
        raise InvalidPhoneNumber("only digits, spaces, '-', '.', '(', ')' and a leading '+' are allowed", text)
    try:
        parsed = _pn.parse(text, default_region)
    except _pn.NumberParseException as error:
        raise InvalidPhoneNumber(_parse_reason(error), text) from None
    if not _pn.is_possible_number(parsed):
        reason = _possible_reason(_pn.is_possible_number_with_reason(parsed))
        raise InvalidPhoneNumber(reason, text)
    if not _pn.is_valid_number(parsed):
        raise InvalidPhoneNumber("not a valid number for its region", text)
    region = _pn.region_code_for_number(parsed)
    if countries is not None:
        if region not in countries:
            raise InvalidPhoneNumber(f"a {region or 'non-geographic'} number; this campaign dials "
                                     f"{', '.join(countries)} (phones.countries)", text)
    elif not allow_foreign and default_region and region != default_region.upper():
        raise InvalidPhoneNumber(f"a {region or 'non-geographic'} number, not {default_region.upper()}", text)
    kind = _pn.number_type(parsed)
    if kind in _NEVER_DIALLED:
        raise InvalidPhoneNumber(f"a {_NEVER_DIALLED[kind]} number, not a lead's phone", text)
    if not landlines and kind not in _MOBILE_TYPES:
        raise InvalidPhoneNumber("a landline, not a mobile (phones.landlines: true in the campaign "
                                 "dials landlines)", text)
    return _pn.format_number(parsed, _pn.PhoneNumberFormat.E164)


_MOBILE_TYPES = (_pn.PhoneNumberType.MOBILE, _pn.PhoneNumberType.FIXED_LINE_OR_MOBILE)
_NEVER_DIALLED = {
    _pn.PhoneNumberType.TOLL_FREE: "toll-free",
    _pn.PhoneNumberType.PREMIUM_RATE: "premium-rate",
    _pn.PhoneNumberType.SHARED_COST: "shared-cost",
}


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
