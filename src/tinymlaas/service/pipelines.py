"""Reading pipeline YAML files with errors that name the field.

User YAML goes through :func:`load_yaml`: a safe loader that refuses anchors and aliases
(so an alias bomb cannot expand), documents over :data:`MAX_YAML_BYTES` and nesting deeper
than :data:`MAX_YAML_DEPTH`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent

from tinymlaas.domain import Pipeline
from tinymlaas.errors import InvalidInputError, PayloadTooLargeError

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "load_pipeline", "load_yaml", "parse_pipeline"]

#: The largest pipeline file read (a pipeline is a few lines; this is generous).
MAX_YAML_BYTES = 1024 * 1024
#: The deepest nesting of mappings and lists.
MAX_YAML_DEPTH = 50
#: Validation problems named in one error message (the first 100 go in its details).
_SHOWN_ERRORS = 10


class _RefusedYaml(Exception):
    """A YAML feature we refuse; carries the readable reason and where it was."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors and aliases, and with a nesting limit."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or (isinstance(event, NodeEvent) and event.anchor):
            raise _RefusedYaml("anchors and aliases are not allowed", event.start_mark)
        nested = isinstance(event, CollectionStartEvent)
        if nested:
            self._depth += 1
            if self._depth > MAX_YAML_DEPTH:
                raise _RefusedYaml(f"nested more than {MAX_YAML_DEPTH} levels deep",
                                   event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1


def load_yaml(text: str, source: str = "pipeline") -> Any:
    """Parse one YAML document of user input, or raise a one-line :class:`InvalidInputError`.

    Raises:
        PayloadTooLargeError: the text is over :data:`MAX_YAML_BYTES`.
        InvalidInputError: invalid YAML, anchors or aliases, too deep, or numbers Python
            cannot represent.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_YAML_BYTES:
        raise PayloadTooLargeError(f"{source} is {size} bytes; a pipeline file may have at "
                                   f"most {MAX_YAML_BYTES}", {"limit_bytes": MAX_YAML_BYTES})
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except (yaml.YAMLError, _RefusedYaml) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInputError(f"{source}: invalid YAML{where}: {problem}") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. a 5000-digit integer
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(f"{source}: invalid YAML: {first}") from None
    finally:
        loader.dispose()


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
        shown = "; ".join(problems[:_SHOWN_ERRORS])
        if len(problems) > _SHOWN_ERRORS:
            shown += f"; and {len(problems) - _SHOWN_ERRORS} more"
        raise InvalidInputError(f"{source}: {shown}",
                                {"errors": problems[:100]}) from None


def load_pipeline(path: Path) -> Pipeline:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read pipeline file {path}: {exc.strerror}") from exc
    if len(raw) > MAX_YAML_BYTES:
        raise PayloadTooLargeError(f"{path.name} is larger than {MAX_YAML_BYTES} bytes; a "
                                   "pipeline file is a few lines",
                                   {"limit_bytes": MAX_YAML_BYTES})
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path.name} is not UTF-8 text") from None
    return parse_pipeline(load_yaml(text, path.name), path.name)
