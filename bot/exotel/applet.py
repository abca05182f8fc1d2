"""The Voicebot applet's two addresses: the signed dynamic URL to paste into the applet
(Exotel GETs it for each call) and the media socket URL it answers with.

Exotel passes up to 3 query parameters (256 characters in all) on the stream URL to the bot
as `start.custom_parameters`; the sample rate is chosen on the URL (`sample-rate=16000`), and
Basic credentials written into the wss URL reach the bot as an `Authorization` header.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode, urlsplit

from bot.config.settings import Settings
from bot.exotel.signing import sign, verify

CONNECT_PATH = "/exotel/connect"
_CONNECT_PURPOSE = ("connect", "applet")
MAX_STREAM_PARAMS = 3
MAX_STREAM_QUERY_CHARS = 256


def applet_url(settings: Settings, key: bytes) -> str:
    """The signed dynamic URL to paste into the Voicebot applet."""
    return f"{settings.public_base_url}{CONNECT_PATH}?sig={sign(key, *_CONNECT_PURPOSE)}"


def applet_signature_ok(key: bytes, sig: str | None) -> bool:
    """True if `sig` is the one `applet_url` signed with `key`."""
    return verify(key, *_CONNECT_PURPOSE, sig)


def media_url(settings: Settings, params: dict[str, str]) -> str:
    """`wss://[user:password@]PUBLIC_HOST/media?...`: the sample rate first, then `params`,
    at most MAX_STREAM_PARAMS of them in MAX_STREAM_QUERY_CHARS."""
    base = urlsplit(settings.public_base_url)
    scheme = "wss" if base.scheme == "https" else "ws"
    auth = ""
    if settings.media_auth_enabled:
        user, password = settings.media_auth_user or "", settings.media_auth_password or ""
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    if settings.exotel_sample_rate:
        params = {"sample-rate": str(settings.exotel_sample_rate), **params}
    query = urlencode(dict(list(params.items())[:MAX_STREAM_PARAMS]))[:MAX_STREAM_QUERY_CHARS]
    return f"{scheme}://{auth}{base.netloc}{base.path}/media" + (f"?{query}" if query else "")
