"""Form pieces: parameter fields generated from a transformer's JSON schema, the step
builder's submitted JSON, and errors mapped back to the step and field they name."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tinymlaas.domain import Fidelity
from tinymlaas.errors import InvalidInputError, TinymlaasError

__all__ = ["FIDELITY_FIELDS", "FidelityField", "ParamField", "StepErrors", "param_fields",
           "parse_fidelity", "parse_steps", "step_errors"]

_STEP = re.compile(r"^step (\d+) ")
MAX_STEPS = 32


@dataclass
class ParamField:
    """One input of a step's parameter form.

    ``kind`` decides the widget and how the browser encodes the value: ``bool``
    (checkbox), ``enum`` (select), ``int`` / ``number`` (number input), ``str``, ``list``
    (comma-separated strings) or ``json`` (anything else, as JSON text).
    """

    name: str
    title: str
    kind: str
    default: Any = None
    description: str = ""
    options: list[str] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False

    @property
    def default_text(self) -> str:
        """The default as the input's initial text."""
        if self.default is None:
            return ""
        if self.kind == "list":
            return ", ".join(str(v) for v in self.default)
        if self.kind == "json":
            return json.dumps(self.default)
        return str(self.default)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {**root.get("$defs", {}).get(ref.rsplit("/", 1)[1], {}),
                **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _field(name: str, prop: dict[str, Any], root: dict[str, Any]) -> ParamField:
    prop = _resolve(prop, root)
    nullable = False
    options = prop.get("anyOf")
    if isinstance(options, list):
        concrete = [_resolve(o, root) for o in options if o.get("type") != "null"]
        nullable = len(concrete) < len(options)
        if len(concrete) == 1:
            prop = {**concrete[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
    kind = "json"
    typ = prop.get("type")
    if "enum" in prop:
        kind = "enum"
    elif typ == "boolean":
        kind = "bool"
    elif typ == "integer":
        kind = "int"
    elif typ == "number":
        kind = "number"
    elif typ == "string":
        kind = "str"
    elif typ == "array" and _resolve(prop.get("items", {}), root).get("type") == "string":
        kind = "list"
    minimum = prop.get("minimum", prop.get("exclusiveMinimum"))
    maximum = prop.get("maximum", prop.get("exclusiveMaximum"))
    return ParamField(name=name, title=prop.get("title") or name.replace("_", " "),
                      kind=kind, default=prop.get("default"),
                      description=prop.get("description", ""),
                      options=[str(o) for o in prop.get("enum", [])],
                      minimum=minimum, maximum=maximum, nullable=nullable)


def param_fields(schema: dict[str, Any]) -> list[ParamField]:
    """The inputs of a parameter form, in the schema's order."""
    props = schema.get("properties") or {}
    return [_field(name, prop, schema) for name, prop in props.items()
            if isinstance(prop, dict)]


def parse_steps(text: str) -> list[dict[str, Any]]:
    """The step builder's hidden field: ``[{"transformer": name, "params": {...}}, ...]``.

    Raises:
        InvalidInputError: not that shape (the engine checks names and params after).
    """
    try:
        steps = json.loads(text or "[]")
    except (ValueError, RecursionError):  # malformed, or nested past the parser's depth
        raise InvalidInputError("the step list could not be read; reload the page") from None
    if not isinstance(steps, list) or len(steps) > MAX_STEPS or not all(
            isinstance(s, dict) and isinstance(s.get("transformer"), str)
            and isinstance(s.get("params", {}), dict) for s in steps):
        raise InvalidInputError("the step list could not be read; reload the page")
    if not steps:
        raise InvalidInputError("add at least one step, or pick a template",
                                {"field": "steps"})
    return [{"transformer": s["transformer"], "params": s.get("params") or {}} for s in steps]


@dataclass(frozen=True)
class FidelityField:
    """One threshold of the run form's fidelity gate (a field of :class:`Fidelity`)."""

    key: str
    task: str
    label: str

    @property
    def name(self) -> str:
        """The form field's name."""
        return f"fidelity_{self.key}"

    @property
    def default_text(self) -> str:
        """The default threshold as the input's placeholder (``off`` when none)."""
        default = Fidelity.model_fields[self.key].default
        return "off" if default is None else f"{default:g}"


#: The fidelity gate's thresholds in the run form, one per task.
FIDELITY_FIELDS = [
    FidelityField("max_accuracy_drop", "classification", "largest accuracy drop (points)"),
    FidelityField("min_cosine", "embedding", "smallest mean cosine to the input model"),
    FidelityField("min_snr_db", "generic", "smallest output SNR (dB)"),
    FidelityField("max_mae_increase_pct", "regression", "largest MAE increase (%)"),
    FidelityField("max_auc_drop", "anomaly", "largest AUC drop"),
]
_OFF = {"off", "none"}


def parse_fidelity(texts: dict[str, str]) -> Fidelity | None:
    """The run form's fidelity thresholds (``fidelity_<key>``: a number, ``off``, or empty
    for the default) as a gate; None when every one is empty (the defaults).

    Raises:
        InvalidInputError: a threshold that is not a number or ``off``, or out of its
            range; ``details["field"]`` names the form field.
    """
    values: dict[str, float | None] = {}
    for spec in FIDELITY_FIELDS:
        text = (texts.get(spec.name) or "").strip()
        if not text:
            continue
        where = f"fidelity threshold for {spec.task} ({spec.label})"
        if text.lower() in _OFF:
            values[spec.key] = None
            continue
        try:
            values[spec.key] = float(text)
        except ValueError:
            raise InvalidInputError(f"{where}: {text[:40]!r} is not a number; give a number, "
                                    "off, or leave it empty for the default "
                                    f"({spec.default_text})", {"field": spec.name}) from None
    if not values:
        return None
    try:
        return Fidelity(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        spec = next(f for f in FIDELITY_FIELDS if f.key == error["loc"][0])
        field = Fidelity.model_fields[spec.key].metadata
        low = next((m.ge for m in field if hasattr(m, "ge")), None)
        high = next((m.le for m in field if hasattr(m, "le")), None)
        raise InvalidInputError(
            f"fidelity threshold for {spec.task} ({spec.label}): "
            f"{texts.get(spec.name, '').strip()[:40]!r} is out of range; give a finite number "
            f"from {low:g} to {high:g}, off, or leave it empty for the default "
            f"({spec.default_text})", {"field": spec.name}) from None


@dataclass
class StepErrors:
    """Where a rejected run's message belongs: the whole form, one step, or its fields."""

    message: str
    step: int | None = None
    fields: dict[str, str] = field(default_factory=dict)
    form_field: str | None = None


def step_errors(exc: TinymlaasError) -> StepErrors:
    """Attach an engine error to the step (0-based) and parameter it names."""
    found = _STEP.match(exc.message)
    details = exc.details or {}
    result = StepErrors(exc.message, form_field=str(details["field"]) if "field" in details
                        else None)
    if found:
        result.step = int(found.group(1)) - 1
        for problem in details.get("errors", []) or []:
            name, _, msg = str(problem).partition(": ")
            result.fields[name.split(".")[0]] = msg or str(problem)
    return result
