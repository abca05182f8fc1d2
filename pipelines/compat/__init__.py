"""Upgrade safety: what the agent relies on inside its dependencies, declared and checked.

The agent reaches into a few private parts of Pipecat, the Deepgram and OpenAI SDKs and
uvicorn, where they offer no public way to do what a phone call needs. Each dependency has
one module that holds every such use and lists the names it relies on as `Need`s:

- pipelines/compat/pipecat.py (pipecat-ai)
- pipelines/compat/deepgram_sdk.py (deepgram-sdk)
- pipelines/compat/openai_sdk.py (openai)
- bot/server/uvicorn_compat.py (uvicorn)

`check(needs)` says which of them the installed version no longer has. A need with a
`fallback` only degrades something (the module then works without it, and start-up logs it);
one without would break calls (a lost hang-up, a lost end of a line), so the server refuses
to start, with one line naming the dependency, its version and the missing names
(`require_supported`, called by bot/server/app.py's create_app).
"""

from __future__ import annotations

import dis
import functools
import importlib
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import CodeType, ModuleType
from typing import Any

from loguru import logger


@dataclass(frozen=True)
class Need:
    """One name of a dependency the agent relies on.

    owner: where the name lives: "module" or "module:Class.Nested", or the object itself.
    params: the callable's parameters, exactly (names, in order).
    accepts: keywords the callable must take (named, or through **kwargs).
    assigned: an attribute set on instances (`self.name = ...` in a class of owner's MRO).
    used_by: a method ("start", or "module:Class.method" elsewhere) whose source must still
        mention the name: an override of ours is dead if Pipecat stops calling the method.
    kind: what the name must be (as defined on the class: a functools.cached_property, say).
    fallback: what happens without it; None means calls would break.
    """

    owner: Any
    name: str
    params: tuple[str, ...] | None = None
    accepts: tuple[str, ...] = ()
    assigned: bool = False
    used_by: str | None = None
    kind: type | None = None
    fallback: str | None = None

    @property
    def label(self) -> str:
        return f"{_owner_label(self.owner)}.{self.name}"


@dataclass(frozen=True)
class Missing:
    need: Need
    problem: str

    def __str__(self) -> str:
        return f"{self.need.label} ({self.problem})"


class IncompatibleDependency(SystemExit):
    """An installed dependency lacks a name calls need: the server does not start. A
    SystemExit, so `python server.py` and `bot serve` end with its one line, not a traceback."""


def _owner_label(owner: Any) -> str:
    if isinstance(owner, str):
        module, _, qualname = owner.partition(":")
        return qualname or module
    return getattr(owner, "__qualname__", None) or getattr(owner, "__name__", None) or type(owner).__name__


def resolve(owner: Any) -> Any:
    """The object an owner names ("module" or "module:Class.Nested"); objects as they are."""
    if not isinstance(owner, str):
        return owner
    module, _, qualname = owner.partition(":")
    found: Any = importlib.import_module(module)
    for part in filter(None, qualname.split(".")):
        found = getattr(found, part)
    return found


def _code_objects(obj: Any) -> list[CodeType]:
    """The code of a function, method, property or class (its methods'), nested code too."""
    found: list[CodeType] = []
    seen: set[int] = set()

    def add(value: Any) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, CodeType):
            found.append(value)
            for const in value.co_consts:
                if isinstance(const, CodeType):
                    add(const)
        elif isinstance(value, property):
            for accessor in (value.fget, value.fset, value.fdel):
                if accessor is not None:
                    add(accessor)
        elif isinstance(value, (staticmethod, classmethod)):
            add(value.__func__)
        elif isinstance(value, functools.cached_property):
            add(value.func)
        elif inspect.isclass(value):
            for member in vars(value).values():
                add(member)
        elif callable(value):
            function = inspect.unwrap(getattr(value, "__func__", value))
            code = getattr(function, "__code__", None)
            if code is not None:
                add(code)

    add(obj)
    return found


def _assigned_in(cls: Any, name: str) -> bool:
    """Some method of a class in cls's MRO sets `self.<name>` (any attribute store of that name)."""
    classes = inspect.getmro(cls) if inspect.isclass(cls) else (cls,)
    for klass in classes:
        if klass is object:
            continue
        for code in _code_objects(klass):
            if name in code.co_names and any(
                    i.opname == "STORE_ATTR" and i.argval == name for i in dis.get_instructions(code)):
                return True
    return False


def _mentions(function: Any, name: str) -> bool:
    """The function's code (or code nested in it) names `name`: a global, an attribute, a method."""
    return any(name in code.co_names for code in _code_objects(function))


def _parameters(function: Any) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None


def _problem(need: Need) -> str | None:
    try:
        owner = resolve(need.owner)
    except (ImportError, AttributeError) as error:
        return f"{_owner_label(need.owner)} is gone: {error}"
    if need.assigned:
        if not _assigned_in(owner, need.name):
            return "no longer set"
    elif not hasattr(owner, need.name):
        return "missing"
    if need.kind is not None and not isinstance(inspect.getattr_static(owner, need.name, None), need.kind):
        return f"no longer a {need.kind.__name__}"
    if need.params is not None or need.accepts:
        params = _parameters(getattr(owner, need.name))
        if params is not None:
            names = tuple(p.name for p in params)
            if need.params is not None and names != need.params:
                return f"takes ({', '.join(names)}), not ({', '.join(need.params)})"
            open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
            absent = [k for k in need.accepts if k not in names and not open_ended]
            if absent:
                return f"no longer takes {', '.join(absent)}"
    if need.used_by is not None:
        try:
            if ":" in need.used_by:
                user, where = resolve(need.used_by), need.used_by
            else:
                user, where = getattr(owner, need.used_by), need.used_by
        except (ImportError, AttributeError):
            return f"{need.used_by} that used it is gone"
        if not _mentions(user, need.name):
            return f"no longer used by {where.rpartition(':')[2] or where}"
    return None


def check(needs: Iterable[Need]) -> list[Missing]:
    """The needs the installed dependency no longer meets (empty: all there)."""
    return [Missing(need, problem) for need in needs if (problem := _problem(need)) is not None]


def installed_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(not installed)"


def describe(distribution: str, missing: Iterable[Missing], where: str) -> str:
    """One line: the dependency, its version and what it lacks."""
    names = ", ".join(str(m) for m in missing)
    return f"{distribution} {installed_version(distribution)} lacks {names} (see {where})"


@dataclass(frozen=True)
class Report:
    """One dependency's check: what would break calls, and what only degrades."""

    distribution: str
    where: str
    fatal: tuple[Missing, ...]
    degraded: tuple[Missing, ...]


def report(module: ModuleType) -> Report:
    """Check a compat module's NEEDS (its DISTRIBUTION and file name the report)."""
    missing = module.check()
    where = module.__name__.replace(".", "/") + ".py"
    return Report(module.DISTRIBUTION, where,
                  tuple(m for m in missing if m.need.fallback is None),
                  tuple(m for m in missing if m.need.fallback is not None))


def _compat_modules() -> list[ModuleType]:
    from pipelines.compat import deepgram_sdk, openai_sdk, pipecat

    return [pipecat, deepgram_sdk, openai_sdk]


@functools.cache
def _verdict(extra: tuple[ModuleType, ...]) -> str | None:
    """Check once per process: log what only degrades; the line to refuse to start with, if any."""
    reports = [report(module) for module in [*_compat_modules(), *extra]]
    for item in reports:
        if item.degraded:
            fallbacks = "; ".join(f"{m.need.label}: {m.need.fallback}" for m in item.degraded)
            logger.warning(f"{describe(item.distribution, item.degraded, item.where)}; running without it: "
                           f"{fallbacks}")
    fatal = [describe(item.distribution, item.fatal, item.where) for item in reports if item.fatal]
    if not fatal:
        return None
    return f"error: not starting, calls need what is missing: {'; '.join(fatal)}"


def require_supported(*extra: ModuleType) -> None:
    """At start-up: log what only degrades, and refuse to start (IncompatibleDependency), with
    one line, if a dependency lacks a name calls need. `extra`: compat modules of layers above
    (bot/server/uvicorn_compat.py). Checked once per process."""
    verdict = _verdict(tuple(extra))
    if verdict is not None:
        raise IncompatibleDependency(verdict)


def clear_cache() -> None:
    """Check again on the next require_supported (tests)."""
    _verdict.cache_clear()
