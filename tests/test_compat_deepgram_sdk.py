"""pipelines/compat/deepgram_sdk.py: the Deepgram SDK names the live STT relies on are there in
the installed version, the check names any that is not (shown on stand-ins lacking them),
and without them the STT works as the SDK does (no deflate saving, no header saving)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from pipelines.compat import check
from pipelines.compat import deepgram_sdk as compat


def test_the_deepgram_sdk_names_the_agent_relies_on_are_there():
    assert compat.check() == []


class Empty:
    """A stand-in for an SDK module or class that has none of the names."""


@pytest.mark.parametrize("need", compat.NEEDS, ids=lambda need: need.label)
def test_every_need_is_reported_on_a_stand_in_without_it(need):
    missing = check((dataclasses.replace(need, owner=Empty),))
    assert len(missing) == 1 and need.name in str(missing[0])


def test_every_need_has_a_fallback():
    """Both savings are optional: an SDK without these names only costs some CPU."""
    assert all(need.fallback for need in compat.NEEDS)


class ConnectModuleWithoutCompression:
    """A connect module whose websocket connect no longer takes `compression`."""

    @staticmethod
    def websockets_client_connect(uri, *, extra_headers=None): ...


def test_a_connect_that_no_longer_takes_compression_is_reported():
    need = compat.NEEDS[0]
    [missing] = check((dataclasses.replace(need, owner=ConnectModuleWithoutCompression, used_by=None),))
    assert missing.problem == "no longer takes compression"


def test_the_check_sees_the_sdks_connect_through_ours():
    """The module's connect is ours once the Deepgram provider is imported; the check (and a
    reader's inspect.signature) still see the SDK's own parameters."""
    import deepgram.listen.v1.client as client_module

    import pipelines.providers.deepgram  # noqa: F401  (installs the connect without deflate)

    connect = client_module.websockets_client_connect
    assert getattr(connect, "without_compression", False)
    assert "compression" in inspect.signature(connect).parameters
    assert "create_protocol" in inspect.signature(connect).parameters  # the SDK's, not our **kwargs


def test_without_a_connect_that_takes_compression_the_sdks_is_left_alone(monkeypatch):
    def sdk_connect(uri, *, extra_headers=None): ...

    for name in compat.CONNECT_MODULES:
        monkeypatch.setattr(f"{name}.websockets_client_connect", sdk_connect)
    assert compat.connect_without_compression() is False
    import deepgram.listen.v1.raw_client as raw

    assert raw.websockets_client_connect is sdk_connect


def test_headers_are_left_to_the_sdk_where_it_keeps_them_elsewhere():
    class ClientWithoutWrapper:
        pass

    client = ClientWithoutWrapper()
    assert compat.reuse_fixed_headers(client) is False
    assert vars(client) == {}


def test_the_reused_headers_are_the_sdks_own():
    from deepgram import AsyncDeepgramClient

    from pipelines.providers.deepgram import PooledAsyncDeepgramClient

    ours = [PooledAsyncDeepgramClient(api_key="key-1", headers={"X-Custom": "1"}) for _ in range(2)]
    theirs = AsyncDeepgramClient(api_key="key-1", headers={"X-Custom": "1"})
    session = "x-deepgram-session-id"  # each client's own
    headers = [client._client_wrapper.get_headers() for client in ours]
    expected = theirs._client_wrapper.get_headers()
    for client, sent in zip(ours, headers, strict=True):
        assert sent[session] == client._client_wrapper.get_custom_headers()[session]
        assert {k: v for k, v in sent.items() if k != session} == {k: v for k, v in expected.items() if k != session}
    assert headers[0][session] != headers[1][session]
