"""Runs without a dataset: allowed when no step uses data and the run does not evaluate."""

from __future__ import annotations

import pytest

from tinymlaas.domain import Pipeline, RunStatus, StepStatus
from tinymlaas.errors import InvalidInputError


def test_a_run_that_neither_uses_data_nor_evaluates_needs_no_dataset(services,
                                                                   digits_onnx) -> None:
    model = services.add_model(digits_onnx, "cnn")
    pipeline = Pipeline.model_validate({"name": "fused", "steps": ["fuse"], "evaluate": False})
    created = services.create_run(pipeline, model=model.id)
    assert created.dataset_id is None
    done = services.execute_run(created.id)
    assert done.status is RunStatus.succeeded, done.error
    assert done.steps[0].status is StepStatus.succeeded and done.output_sha
    assert done.result == {} and done.baseline == {}
    # a rerun keeps "no dataset" and comes from the cache
    again = services.execute_run(services.rerun(done.id).id)
    assert again.dataset_id is None and again.steps[0].status is StepStatus.cached
    assert again.output_sha == done.output_sha


def test_evaluating_or_a_step_that_uses_data_asks_for_a_dataset(services, digits_onnx) -> None:
    model = services.add_model(digits_onnx, "cnn")
    evaluating = Pipeline.model_validate({"name": "e", "steps": ["fuse"]})
    with pytest.raises(InvalidInputError, match="evaluate: false") as caught:
        services.create_run(evaluating, model=model.id)
    assert caught.value.details == {"field": "dataset"}
    calibrating = Pipeline.model_validate({"name": "q", "steps": ["quantize-static"],
                                           "evaluate": False})
    with pytest.raises(InvalidInputError, match=r"step 1 \(quantize-static\) needs a dataset"):
        services.create_run(calibrating, model=model.id)
    assert services.list_runs() == []
