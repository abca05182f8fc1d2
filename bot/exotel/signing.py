"""Secrets in the addresses we hand Exotel (it doesn't sign its callbacks).

Every status-callback and dynamic-URL address carries `sig=HMAC(secret, purpose:value)`;
requests without the right one are refused. The secret is CALLBACK_SECRET, else derived from
EXOTEL_API_TOKEN, else a random one kept in DATA_DIR (shared by the workers of a machine).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from bot.config.private_files import open_private, private_folder
from bot.config.settings import Settings


def signing_key(settings: Settings) -> bytes:
    if settings.callback_secret:
        return settings.callback_secret.get_secret_value().encode()
    if settings.exotel_api_token:
        return hashlib.sha256(b"callback:" + settings.exotel_api_token.get_secret_value().encode()).digest()
    path = private_folder(Path(settings.data_dir)) / ".callback_secret"
    if not path.exists():
        _create_once(path, secrets.token_hex(32))
    return path.read_text().strip().encode()


def _create_once(path: Path, secret: str) -> None:
    """Write the secret 0600 under its final name only if no other process did first: every
    worker starting at once must end up with the same key."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open_private(tmp, "w") as out:
        out.write(secret)
    try:
        os.link(tmp, path)  # atomic, and fails if the file exists: the first writer wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def sign(key: bytes, purpose: str, value: str) -> str:
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()[:32]


def verify(key: bytes, purpose: str, value: str, signature: str | None) -> bool:
    return bool(signature) and hmac.compare_digest(sign(key, purpose, value), str(signature))
