"""Read a YAML file into a pydantic model, with every failure as one line naming the file."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


def load_yaml_model(path: Path, model: type[ModelT], error: type[Exception],
                    defaults: dict[str, Any] | None = None) -> ModelT:
    """`model` from `path`; `error("file: field: reason")` if missing, not YAML, or invalid."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML: {' '.join(str(problem).split())}") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a YAML mapping")
    for key, value in (defaults or {}).items():
        raw.setdefault(key, value)
    try:
        return model.model_validate(raw)
    except ValidationError as problem:
        errors = problem.errors()
        # An unknown key first: a typo ("greting:") explains the "Field required" it causes.
        errors.sort(key=lambda item: item["type"] != "extra_forbidden")
        shown = errors[:2] if errors[0]["type"] == "extra_forbidden" else errors[:1]
        more = f" (+{len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
        told = "; ".join(_one_error(item, model, errors) for item in shown)
        raise error(f"{path}: {told}{more}") from None


def _one_error(item: Any, model: type[BaseModel], errors: list[Any]) -> str:
    field = ".".join(str(part) for part in item["loc"]) or "(file)"
    if item["type"] == "extra_forbidden":
        return f"{field}: unknown key{_did_you_mean(item['loc'], model, errors)}"
    return f"{field}: {item['msg'].removeprefix('Value error, ')}"


def _did_you_mean(loc: tuple, model: type[BaseModel], errors: list[Any]) -> str:
    """' (did you mean 'greeting'?)' for a key close to one the model has, else ''."""
    fields: dict[str, Any] = model.model_fields
    for part in loc[:-1]:  # walk down to the model that holds the key
        annotation = fields[str(part)].annotation if str(part) in fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        fields = annotation.model_fields
    missing = {str(e["loc"][-1]) for e in errors if e["type"] == "missing" and tuple(e["loc"][:-1]) == tuple(loc[:-1])}
    close = difflib.get_close_matches(str(loc[-1]), sorted(missing) + sorted(set(fields) - missing), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
