"""pipelines/compat/openai_sdk.py: the OpenAI SDK internals of the lean request path are there in
the installed version, the check names any that is not (shown on stand-ins lacking them), and
without them the pipeline builder still imports and requests go through the SDK's create()."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from pipelines.compat import check
from pipelines.compat import openai_sdk as compat
from testing.server_process import ROOT


def test_the_openai_sdk_names_the_lean_path_relies_on_are_there():
    assert compat.check() == []
    assert compat.lean_path_available()


class Empty:
    """A stand-in for an SDK module or class that has none of the names."""


@pytest.mark.parametrize("need", compat.NEEDS, ids=lambda need: need.label)
def test_every_need_is_reported_on_a_stand_in_without_it(need):
    missing = check((dataclasses.replace(need, owner=Empty),))
    assert len(missing) == 1 and need.name in str(missing[0])


def test_every_need_falls_back_to_the_sdks_create():
    assert all(need.fallback for need in compat.NEEDS)


class BaseClientModuleOfAnotherRelease:
    """openai._base_client as a release whose make_request_options takes no `security`."""

    @staticmethod
    def make_request_options(*, extra_headers=None, extra_query=None, extra_body=None, timeout=None): ...


class ChatWithAPlainProperty:
    @property
    def completions(self): ...


def test_changed_internals_are_reported():
    by_name = {need.name: need for need in compat.NEEDS}
    [missing] = check((dataclasses.replace(by_name["make_request_options"], owner=BaseClientModuleOfAnotherRelease),))
    assert missing.problem == "no longer takes security"
    [missing] = check((dataclasses.replace(by_name["completions"], owner=ChatWithAPlainProperty),))
    assert missing.problem == "no longer a cached_property"


def test_the_pipeline_builder_imports_when_the_sdk_internals_moved():
    """An SDK whose make_request_options moved: the builder imports, the check names it, and
    the lean path is off (requests use create())."""
    code = (
        "from openai.resources.chat import AsyncChat\n"
        "from openai.resources.chat.completions import AsyncCompletions\n"
        "import openai._base_client as b; del b.make_request_options\n"
        "import pipelines.builder\nimport pipelines.providers.openai\n"
        "from pipelines.compat import openai_sdk\n"
        "assert not openai_sdk.lean_path_available()\n"
        "print([str(m) for m in openai_sdk.check()])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "make_request_options (missing)" in result.stdout


async def test_without_the_lean_path_requests_go_through_create(monkeypatch):
    from pipelines.providers import openai as lean

    calls: list[dict] = []

    async def sdk_create(self, **params):
        calls.append(params)
        return "stream"

    monkeypatch.setattr(compat, "make_request_options", None)
    compat.lean_path_available.cache_clear()
    try:
        client = lean.LeanAsyncOpenAI(api_key="test", base_url="http://127.0.0.1:9/v1")
        monkeypatch.setattr(lean.AsyncCompletions, "create", sdk_create)
        params = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        assert await client.chat.completions.create(**params) == "stream"
        assert calls == [params]
    finally:
        monkeypatch.undo()
        compat.lean_path_available.cache_clear()
    assert compat.lean_path_available()
