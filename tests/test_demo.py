"""The demo (`make demo`) from an empty data directory, and the shipped pipeline files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinymlaas.domain import Pipeline
from tinymlaas.service.pipelines import load_pipeline
from tinymlaas.templates import template_names, template_path


def test_demo_runs_five_pipelines_and_prints_the_comparison(settings, capsys) -> None:
    from tinymlaas.cli.demo import DEMO_PIPELINES, run_demo
    from tinymlaas.service import Services

    run_ids = run_demo(epochs=15)
    out = capsys.readouterr().out
    assert "Comparison" in out and "static-int8" in out and "fp16" in out
    svc = Services(settings)
    runs = {svc.get_run(r).name: svc.get_run(r) for r in run_ids}
    assert list(runs) == DEMO_PIPELINES
    assert all(r.status == "succeeded" for r in runs.values())
    assert svc.get_model(runs["baseline"].model_id).parameters >= 100_000
    rows = {row.name: row for row in svc.compare(run_ids, reference=run_ids[0])}
    assert rows["baseline"].accuracy > 95
    assert rows["static-int8"].size_ratio >= 3.5
    assert rows["static-int8"].accuracy_change >= -1.0
    assert rows["dynamic-int8"].size_ratio >= 3.5
    assert 1.8 <= rows["fp16"].size_ratio <= 2.2
    assert abs(rows["fuse"].accuracy_change) < 0.01
    # a second demo reuses everything: same model, all steps from the cache
    again = run_demo(epochs=15)
    assert all(s.status == "cached" for r in again for s in svc.get_run(r).steps)
    svc.close()


@pytest.mark.parametrize("name", template_names())
def test_templates_plan_for_a_pytorch_model(name: str, services, registered) -> None:
    """Templates that start with export-onnx take the PyTorch model; the others (auto-int8)
    take ONNX models."""
    from tinymlaas.domain import ArtifactKind

    model, _ = registered
    pipeline = load_pipeline(template_path(name))
    kind = model.kind if pipeline.steps[0].transformer == "export-onnx" else ArtifactKind.onnx
    device = services.get_device("stm32-nucleo-l4r5zi")  # signed-firmware needs a board
    assert services.engine.plan(pipeline, kind, has_dataset=True, device=device)


def test_examples_parse_and_plan(examples_dir: Path, services, registered) -> None:
    from tinymlaas.domain import ArtifactKind

    model, _ = registered
    files = sorted(examples_dir.glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        pipeline: Pipeline = load_pipeline(path)
        kind = ArtifactKind.onnx if pipeline.steps[0].transformer != "export-onnx" \
            else model.kind
        assert services.engine.plan(pipeline, kind, has_dataset=True), path.name
