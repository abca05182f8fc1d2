"""Optional Basic auth on the media socket (Exotel sends credentials written in the wss URL)."""

from __future__ import annotations

import base64
import binascii
import secrets

from bot.config.settings import Settings


def media_request_authorized(authorization: str | None, settings: Settings) -> bool:
    """True when auth is off, or the `Authorization: Basic` header carries the right pair."""
    if not settings.media_auth_enabled:
        return True
    if not authorization or not authorization[:6].lower() == "basic ":
        return False
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    user, _, password = decoded.partition(":")
    user_ok = secrets.compare_digest(user.encode(), str(settings.media_auth_user).encode())
    pass_ok = secrets.compare_digest(password.encode(), str(settings.media_auth_password).encode())
    return user_ok and pass_ok
