"""Read a YAML file into a pydantic model, with every failure as one line naming the file."""

from __future__ import annotations

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
        item = problem.errors()[0]
        field = ".".join(str(part) for part in item["loc"]) or "(file)"
        more = f" (+{problem.error_count() - 1} more)" if problem.error_count() > 1 else ""
        reason = item["msg"].removeprefix("Value error, ")
        raise error(f"{path}: {field}: {reason}{more}") from None
