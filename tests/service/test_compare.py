"""Comparing runs says when they start from different models: their metrics and ratios are
then not comparable."""

from __future__ import annotations

from pathlib import Path

from helpers import other_digits_onnx
from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain import Pipeline


def test_compare_warns_about_different_source_models(services, tmp_path: Path) -> None:
    first = services.add_model(write_digits_onnx(tmp_path / "a.onnx"), "first")
    again = services.add_model(write_digits_onnx(tmp_path / "b.onnx"), "first-again")
    other = services.add_model(other_digits_onnx(tmp_path / "c.onnx"), "other")
    assert again.artifact_sha == first.artifact_sha != other.artifact_sha
    services.add_dataset("digits")
    pipeline = Pipeline.model_validate({"steps": ["fuse"], "evaluate": False})

    def run(model: str, name: str) -> str:
        return services.create_run(pipeline, model=model, dataset="digits", name=name).id

    fused, fp16 = run("first", "fused"), run("first", "fp16")
    same_content, unrelated = run("first-again", "same-content"), run("other", "unrelated")

    rows = services.compare([fused, fp16])
    assert [r.warnings for r in rows] == [[], []]
    assert {r.source_model for r in rows} == {first.id}
    assert {r.source_model_sha for r in rows} == {first.artifact_sha}
    # the same content registered twice is the same model
    assert [r.warnings for r in services.compare([fused, same_content])] == [[], []]

    rows = services.compare([fused, unrelated])
    assert [r.source_model for r in rows] == [first.id, other.id]
    assert rows[0].warnings == rows[1].warnings and len(rows[0].warnings) == 1
    warning = rows[0].warnings[0]
    assert "different models" in warning and "not comparable" in warning
    assert f"first ({first.id})" in warning and f"other ({other.id})" in warning
    # a reference run counts too
    rows = services.compare([fused, fp16], reference=unrelated)
    assert all("different models" in w for r in rows for w in r.warnings) and rows[0].warnings
