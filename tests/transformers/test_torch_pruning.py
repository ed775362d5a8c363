"""Structured pruning, magnitude pruning and N:M sparsity on the digits CNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinymlaas.domain import ArtifactKind, DatasetSplits, Task
from tinymlaas.evaluation.evaluate import evaluate_model
from tinymlaas.formats.datasets import load_builtin, write_canonical
from tinymlaas.formats.torch_models import example_inputs
from tinymlaas.transformers.base import DatasetAccess, StepContext, StepOutput
from tinymlaas.transformers.registry import get_transformer, validate_params
from tinymlaas.transformers.torch.training import load_trainable


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DatasetAccess:
    path = write_canonical(load_builtin("digits"),
                           tmp_path_factory.mktemp("data") / "digits.npz")
    return DatasetAccess(path, Task.classification, DatasetSplits(), 10)


def run_step(name: str, params: dict, source: Path, digits: DatasetAccess,
             out: Path) -> StepOutput:
    kind = ArtifactKind.onnx if source.suffix == ".onnx" else ArtifactKind.torch_exported
    out.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(input_path=source, input_kind=kind, params=validate_params(name, params),
                      out_dir=out, work_dir=out, dataset=digits)
    return get_transformer(name).run(ctx)


def test_accuracy(output: StepOutput, digits: DatasetAccess) -> dict:
    X, y = digits.split("test")
    inputs = example_inputs(output.path, output.kind) \
        if output.kind is ArtifactKind.torch_exported else None
    metrics, _ = evaluate_model(output.path, output.kind, Task.classification, X, y,
                                inputs=inputs, latency_runs=20, latency_budget_s=0.2)
    return metrics


test_accuracy.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def baseline(digits_cnn: tuple[Path, float], digits: DatasetAccess) -> dict:
    return test_accuracy(StepOutput(digits_cnn[0], ArtifactKind.torch_exported), digits)


def test_structured_pruning_halves_parameters_and_macs(digits_cnn, digits, baseline,
                                                       tmp_path: Path) -> None:
    out = run_step("prune-structured", {"ratio": 0.5, "epochs": 3}, digits_cnn[0], digits,
                   tmp_path)
    metrics = test_accuracy(out, digits)
    assert out.kind is ArtifactKind.torch_exported
    assert metrics["parameters"] <= 0.6 * baseline["parameters"]
    assert metrics["macs"] <= 0.6 * baseline["macs"]
    assert metrics["accuracy"] >= baseline["accuracy"] - 2.0
    assert out.metrics["parameters_after"] == metrics["parameters"]
    # Real channels are gone: the first convolution is narrower, not masked.
    module = load_trainable(out.path, ArtifactKind.torch_exported)
    first = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.out_channels < 32
    assert out.metrics["layer_widths"]["head_3"] == 10


def test_structured_pruning_by_macs_and_dynamic_batch(digits_cnn, digits, baseline,
                                                      tmp_path: Path) -> None:
    out = run_step("prune-structured", {"ratio": 0.6, "target": "macs", "epochs": 1},
                   digits_cnn[0], digits, tmp_path)
    assert out.metrics["mac_ratio"] <= 0.4
    program = torch.export.load(str(out.path))
    for batch in (1, 7):
        assert program.module()(torch.zeros(batch, 1, 8, 8)).shape == (batch, 10)


def test_magnitude_pruning_reports_sparsity_and_sparse_sizes(digits_cnn, digits, baseline,
                                                             tmp_path: Path) -> None:
    out = run_step("prune-magnitude", {"sparsity": 0.8, "epochs": 3}, digits_cnn[0], digits,
                   tmp_path)
    m = out.metrics
    module = load_trainable(out.path, ArtifactKind.torch_exported)
    weights = torch.cat([mod.weight.detach().flatten() for mod in module.modules()
                         if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))])
    zeros = float((weights == 0).float().mean())
    assert zeros == pytest.approx(0.8, abs=0.01)
    assert m["sparsity"] == pytest.approx(zeros, abs=0.001)
    assert m["bitmask_weight_bytes"] < 0.3 * m["dense_weight_bytes"]
    assert m["csr_weight_bytes"] < 0.5 * m["dense_weight_bytes"]
    assert test_accuracy(out, digits)["accuracy"] >= baseline["accuracy"] - 2.0


def test_two_four_sparsity_pattern(digits_cnn, digits, baseline, tmp_path: Path) -> None:
    out = run_step("sparsify", {"n": 2, "m": 4, "epochs": 2}, digits_cnn[0], digits, tmp_path)
    module = load_trainable(out.path, ArtifactKind.torch_exported)
    head = module.head_1.weight.detach().reshape(128, -1, 4)
    assert int((head != 0).sum(-1).max()) <= 2
    assert out.metrics["layer_sparsity"]["head_1"] == pytest.approx(0.5)
    assert out.metrics["dense_layers"] == ["features_0"]  # 1x3x3 inputs: not a multiple of 4
    assert out.metrics["n_m_weight_bytes"] < 0.6 * out.metrics["dense_weight_bytes"]
    assert test_accuracy(out, digits)["accuracy"] >= baseline["accuracy"] - 2.0


def test_invalid_params_name_the_field() -> None:
    from tinymlaas.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="ratio"):
        validate_params("prune-structured", {"ratio": 1.5})
    with pytest.raises(InvalidInputError, match="smaller than m"):
        validate_params("sparsify", {"n": 4, "m": 4})


def test_unknown_layer_is_rejected(digits_cnn, digits, tmp_path: Path) -> None:
    from tinymlaas.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="unknown layer"):
        run_step("prune-structured", {"keep_layers": ["nope"], "epochs": 0}, digits_cnn[0],
                 digits, tmp_path)


def test_pruning_an_onnx_model(digits_onnx: Path, digits, tmp_path: Path) -> None:
    out = run_step("prune-structured", {"ratio": 0.5, "epochs": 1}, digits_onnx, digits,
                   tmp_path)
    assert out.kind is ArtifactKind.torch_exported
    assert out.metrics["parameter_ratio"] <= 0.5
    assert test_accuracy(out, digits)["accuracy"] > 90.0
    assert np.isfinite(out.metrics["final_loss"])
