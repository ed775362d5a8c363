"""The web layer's pure pieces: schema-generated fields, the step builder's JSON, error
placement, Pareto fronts, safe redirects and the bundled plotly.js."""

from __future__ import annotations

import pytest

from tinymlaas.errors import IncompatibleChainError, InvalidInputError
from tinymlaas.service.services import ComparisonRow
from tinymlaas.transformers.registry import params_schema
from tinymlaas.web.charts import bar_figures, pareto_front, scatter_figures
from tinymlaas.web.forms import param_fields, parse_steps, step_errors
from tinymlaas.web.routes.vendor import plotly_js_path
from tinymlaas.web.routing import safe_next


def test_param_fields_follow_the_schema() -> None:
    fields = {f.name: f for f in param_fields(params_schema("quantize-static"))}
    assert fields["per_channel"].kind == "bool" and fields["per_channel"].default is True
    assert fields["format"].kind == "enum" and fields["format"].options == ["qdq", "qoperator"]
    assert fields["num_samples"].kind == "int" and fields["num_samples"].minimum is not None
    assert fields["nodes_to_exclude"].kind == "list"
    assert fields["nodes_to_exclude"].default_text == ""
    external = {f.name: f for f in param_fields(params_schema("external"))}
    assert external["command"].nullable and external["command"].kind == "list"


def test_parse_steps_accepts_the_builder_shape_only() -> None:
    steps = parse_steps('[{"transformer": "fuse", "params": {"simplify": false}}]')
    assert steps == [{"transformer": "fuse", "params": {"simplify": False}}]
    nested = '[{"transformer": "fuse", "params": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}]"
    for bad in ("not json", '{"transformer": "fuse"}', '[{"params": {}}]', "[1]", nested):
        with pytest.raises(InvalidInputError):
            parse_steps(bad)
    with pytest.raises(InvalidInputError) as caught:
        parse_steps("[]")
    assert caught.value.details == {"field": "steps"}


def test_errors_are_placed_on_their_step_and_field() -> None:
    placed = step_errors(InvalidInputError(
        "step 2 quantize-static: invalid params: num_samples: Input should be greater than 0",
        {"transformer": "quantize-static",
         "errors": ["num_samples: Input should be greater than 0"]}))
    assert placed.step == 1
    assert placed.fields == {"num_samples": "Input should be greater than 0"}
    chain = step_errors(IncompatibleChainError("step 1 (export-onnx) takes torch-exported",
                                               {"step": 1}))
    assert chain.step == 0 and chain.fields == {}
    form = step_errors(InvalidInputError("pick the model", {"field": "model"}))
    assert form.step is None and form.form_field == "model"


def test_pareto_front() -> None:
    # (size, accuracy): smaller and more accurate wins
    points = [(100.0, 90.0), (50.0, 89.0), (60.0, 85.0), (100.0, 91.0), (20.0, 70.0)]
    assert pareto_front(points) == [4, 1, 3]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # ties are both kept


def _row(name: str, accuracy: float, size: int, latency: float) -> ComparisonRow:
    return ComparisonRow(run_id=f"run-{name}", name=name, status="succeeded", steps=["fuse"],
                         accuracy=accuracy, file_bytes=size, latency_ms=latency,
                         peak_memory_mb=10.0, size_ratio=2.0, reference="input model")


def test_comparison_figures() -> None:
    rows = [_row("a", 98.0, 4096, 1.0), _row("b", 97.0, 2048, 2.0), _row("c", 96.0, 8192, 3.0)]
    figures = scatter_figures(rows, {"accuracy": 98.5, "file_bytes": 16384,
                                     "latency_ms_p50": 4.0, "peak_memory_mb": 20.0})
    size = next(f for f in figures if f["id"] == "plot-file-bytes")
    runs, front, base = size["data"]
    assert runs["x"] == [4.0, 2.0, 8.0]
    assert front["name"] == "Pareto front" and front["x"] == [2.0, 4.0]
    assert base["x"] == [16.0] and base["y"] == [98.5]
    bars = bar_figures(rows)
    assert bars["size_ratio"]["data"][0]["y"] == [2.0, 2.0, 2.0]
    assert bars["accuracy_change"]["data"][0]["y"] == [None, None, None]


def test_safe_next_stays_on_this_site() -> None:
    assert safe_next("/runs/run-1?x=1") == "/runs/run-1?x=1"
    for bad in ("https://evil.example", "//evil.example", "/\\evil", None, ""):
        assert safe_next(bad) == "/projects"


def test_plotly_js_comes_from_the_installed_package() -> None:
    path = plotly_js_path()
    assert path is not None and path.name == "plotly.min.js"
    assert path.stat().st_size > 1_000_000
