"""Phone-number helpers shared by logs and records."""

from __future__ import annotations


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
