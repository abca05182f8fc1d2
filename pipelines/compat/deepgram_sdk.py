"""Every use of a private name of the Deepgram SDK (deepgram-sdk), and the list of them (NEEDS).

Both are savings on the live STT, and both have a working fallback (the SDK as it is):
- its websocket connect without per-message deflate (raw PCM barely compresses; deflating
  every 100 ms chunk costs CPU and a zlib window per call). The SDK's public transport hook
  (`transport_factory` / deepgram.transport.install_transport) swaps the same module names
  for a whole transport of our own and turns the SDK's reconnects off, so the names are
  swapped here instead, for the connect function only: connect_without_compression();
- its headers built once per process instead of on every connect (it looks its version up
  in the installed package's metadata, ~1 ms on the event loop): reuse_fixed_headers().
"""

from __future__ import annotations

import importlib
from typing import Any

from pipelines.compat import Missing, Need
from pipelines.compat import check as check_needs

DISTRIBUTION = "deepgram-sdk"

# The modules whose `websockets_client_connect` the live STT's connect calls, and that connect.
CONNECTS = {"deepgram.listen.v1.client": "AsyncV1Client.connect",
            "deepgram.listen.v1.raw_client": "AsyncRawV1Client.connect"}
CONNECT_MODULES = tuple(CONNECTS)
_DEFLATE = "the STT socket deflates raw PCM (CPU and a zlib window per call)"
_HEADERS = "the SDK builds its headers on every connect (~1 ms on the event loop)"
_WRAPPER = "deepgram.core.client_wrapper:AsyncClientWrapper"

NEEDS: tuple[Need, ...] = (
    *(Need(module, "websockets_client_connect", accepts=("extra_headers", "compression"),
           used_by=f"{module}:{connect}", fallback=_DEFLATE) for module, connect in CONNECTS.items()),
    Need("deepgram.client:AsyncDeepgramClient", "_client_wrapper", assigned=True, fallback=_HEADERS),
    Need(_WRAPPER, "get_headers", params=("self",), used_by="deepgram.listen.v1.client:AsyncV1Client.connect",
         fallback=_HEADERS),
    Need(_WRAPPER, "get_custom_headers", params=("self",), fallback=_HEADERS),
    Need(_WRAPPER, "api_key", assigned=True, fallback=_HEADERS),
)


def check(needs: tuple[Need, ...] = NEEDS) -> list[Missing]:
    """What the installed Deepgram SDK no longer has of `needs`."""
    return check_needs(needs)


def connect_without_compression() -> bool:
    """Make the live STT's websocket connect offer no per-message deflate (process-wide, as
    the SDK's own transport hook is). False, and nothing changed, if this SDK has no such
    connect to wrap."""
    if check(tuple(need for need in NEEDS if need.name == "websockets_client_connect")):
        return False
    for name in CONNECT_MODULES:
        module: Any = importlib.import_module(name)
        connect = module.websockets_client_connect
        if getattr(connect, "without_compression", False):
            continue
        module.websockets_client_connect = _uncompressed(connect)
    return True


def _uncompressed(connect: Any) -> Any:
    def connect_uncompressed(url: str, extra_headers: Any = None, **kwargs: Any) -> Any:
        return connect(url, extra_headers=extra_headers, compression=None, **kwargs)

    connect_uncompressed.without_compression = True  # type: ignore[attr-defined]
    connect_uncompressed.__wrapped__ = connect  # type: ignore[attr-defined]  # checks see the SDK's signature
    return connect_uncompressed


_fixed_headers: dict[str, str] = {}


def reuse_fixed_headers(client: Any) -> bool:
    """Have `client` (an AsyncDeepgramClient) send the SDK's own headers (user agent, SDK and
    Python versions: the same for every call) as built once in this process, with its key
    and custom headers. False, and nothing changed, where this SDK keeps them elsewhere."""
    wrapper = getattr(client, "_client_wrapper", None)
    if wrapper is None or not all(hasattr(wrapper, name) for name in ("get_headers", "get_custom_headers", "api_key")):
        return False
    if not _fixed_headers:
        everything = wrapper.get_headers()
        custom = wrapper.get_custom_headers() or {}
        _fixed_headers.update({k: v for k, v in everything.items() if k != "Authorization" and k not in custom})
    fixed = _fixed_headers

    def headers() -> dict[str, str]:
        return {**fixed, **(wrapper.get_custom_headers() or {}), "Authorization": f"Token {wrapper.api_key}"}

    wrapper.get_headers = headers
    return True
