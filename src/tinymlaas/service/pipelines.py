"""Reading pipeline YAML files with errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tinymlaas.domain import Pipeline
from tinymlaas.errors import InvalidInputError

__all__ = ["load_pipeline", "parse_pipeline"]


def parse_pipeline(data: Any, source: str = "pipeline") -> Pipeline:
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source}: a pipeline is a mapping with 'steps' (and "
                                "optionally name, model, dataset, device)")
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "pipeline"
            problems.append(f"{loc}: {err['msg']}")
        raise InvalidInputError(f"{source}: {'; '.join(problems)}",
                                {"errors": problems}) from None


def load_pipeline(path: Path) -> Pipeline:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read pipeline file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInputError(f"{path.name}: invalid YAML{where}: {problem}") from None
    return parse_pipeline(data, path.name)
