"""The web layer's pure pieces: schema-generated fields, the step builder's JSON, error
placement, Pareto fronts, safe redirects and the bundled plotly.js."""

from __future__ import annotations

import pytest

from tinymlaas.errors import IncompatibleChainError, InvalidInputError
from tinymlaas.service.compare import ComparisonRow, HostMetrics, ReferenceMetrics
from tinymlaas.transformers.registry import params_schema
from tinymlaas.web.charts import accuracy_range, bar_figures, pareto_front, scatter_figures
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


def _row(name: str, accuracy: float, size: int, latency: float,
         runtime: str = "onnxruntime") -> ComparisonRow:
    return ComparisonRow(run_id=f"run-{name}", name=name, status="succeeded", steps=["fuse"],
                         accuracy=accuracy, file_bytes=size, size_ratio=2.0,
                         host=HostMetrics(runtime=runtime, latency_ms=latency,
                                          peak_memory_mb=10.0),
                         baseline=ReferenceMetrics(runtime=runtime, accuracy=98.5,
                                                   file_bytes=16384, latency_ms=4.0,
                                                   peak_memory_mb=20.0),
                         reference="float32 input model")


def test_comparison_figures() -> None:
    rows = [_row("a", 98.0, 4096, 1.0), _row("b", 97.0, 2048, 2.0), _row("c", 96.0, 8192, 3.0)]
    figures = scatter_figures(rows)
    size = next(f for f in figures if f["id"] == "plot-file-bytes")
    *runs, front, base = size["data"]
    assert [t["x"] for t in runs] == [[4.0], [2.0], [8.0]]
    assert front["name"] == "Pareto front" and front["x"] == [2.0, 4.0]
    assert base["x"] == [16.0] and base["y"] == [98.5]
    # no permanent text labels on the points: hover and the legend name the runs
    assert all("text" not in t["mode"] for f in figures for t in f["data"])
    assert [t["name"] for t in runs] == ["a · ONNX Runtime", "b · ONNX Runtime",
                                         "c · ONNX Runtime"]
    bars = bar_figures(rows)
    assert bars["size_ratio"]["data"][0]["x"] == [2.0, 2.0, 2.0]
    assert bars["accuracy_change"]["data"][0]["x"] == [None, None, None]


def test_accuracy_axes_are_fitted_to_the_data() -> None:
    # four runs at one accuracy still get a readable axis, not 0 to 100
    same = [_row(n, 98.89, 4096 * (i + 1), 1.0 + i) for i, n in enumerate("abcd")]
    for figure in scatter_figures(same):
        if not figure["data"]:  # no device, no device plot
            assert figure["layout"]["yaxis"]["range"] is None
            continue
        # the runs at 98.89 % and their float32 baseline at 98.5 %, half a point of padding
        assert figure["layout"]["yaxis"]["range"] == [98.0, 99.39], figure["id"]
    low, high = bar_figures(same)["accuracy"]["layout"]["xaxis"]["range"]
    assert (low, high) == (98.39, 99.39)
    spread = [_row("a", 90.0, 1, 1.0), _row("b", 98.0, 2, 1.0)]
    assert accuracy_range([90.0, 98.0]) == [88.8, 99.2]
    assert bar_figures(spread)["accuracy"]["layout"]["xaxis"]["range"] == [88.8, 99.2]
    assert accuracy_range([]) is None


def test_runtimes_never_share_a_front() -> None:
    rows = [_row("ort-a", 98.0, 4096, 1.0), _row("ort-b", 98.5, 2048, 2.0),
            _row("c-a", 98.5, 2000, 3.0, "c"), _row("c-b", 99.0, 1000, 5.0, "c")]
    latency = next(f for f in scatter_figures(rows) if f["id"] == "plot-latency-ms")
    fronts = {t["name"]: t["x"] for t in latency["data"] if t["name"].startswith("Pareto")}
    # on one axis ONNX Runtime's ort-b would push c-a off the front: each runtime has its
    # own front instead
    assert fronts == {"Pareto front · ONNX Runtime": [1.0, 2.0],
                      "Pareto front · generated C (host build)": [3.0, 5.0]}
    symbols = {t["name"]: t["marker"]["symbol"] for t in latency["data"]
               if "meta" in t and t["meta"] != "baseline"}
    assert symbols["ort-a · ONNX Runtime"] == "circle"
    assert symbols["c-a · generated C (host build)"] == "square"
    baselines = [t["name"] for t in latency["data"] if t.get("meta") == "baseline"]
    assert baselines == ["float32 baseline · ONNX Runtime",
                         "float32 baseline · generated C (host build)"]
    # no device section, no device plot points
    device = next(f for f in scatter_figures(rows) if f["id"] == "plot-device-ram")
    assert device["data"] == [] and device["layout"]["shapes"] == []


def test_safe_next_stays_on_this_site() -> None:
    assert safe_next("/runs/run-1?x=1") == "/runs/run-1?x=1"
    for bad in ("https://evil.example", "//evil.example", "/\\evil", None, ""):
        assert safe_next(bad) == "/projects"


def test_plotly_js_comes_from_the_installed_package() -> None:
    path = plotly_js_path()
    assert path is not None and path.name == "plotly.min.js"
    assert path.stat().st_size > 1_000_000
