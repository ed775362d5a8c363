"""Low-rank factorization and knowledge distillation on the digits CNN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_torch_pruning import baseline, digits, run_step, test_accuracy

from tinymlaas.domain import ArtifactKind
from tinymlaas.transformers.torch.training import load_trainable, save_exported

__all__ = ["baseline", "digits"]  # fixtures shared with the pruning tests


def test_lowrank_cuts_parameters_with_the_reported_ranks(digits_cnn, digits, baseline,
                                                         tmp_path: Path) -> None:
    out = run_step("factorize-lowrank", {"rank_ratio": 0.25, "include_convs": False,
                                         "epochs": 3}, digits_cnn[0], digits, tmp_path)
    ranks = out.metrics["ranks"]
    assert ranks["head_1"]["rank"] == 32  # a quarter of min(128, 1024)
    module = load_trainable(out.path, ArtifactKind.torch_exported)
    linears = {m.out_features: m for m in module.modules() if isinstance(m, torch.nn.Linear)}
    assert linears[32].in_features == 1024 and linears[128].in_features == 32
    saved = sum(r["weights_before"] - r["weights_after"] for r in ranks.values())
    metrics = test_accuracy(out, digits)
    assert metrics["parameters"] <= baseline["parameters"] - saved + 200  # biases aside
    assert metrics["parameters"] < 0.5 * baseline["parameters"]
    assert metrics["accuracy"] >= baseline["accuracy"] - 2.0


def test_convolution_becomes_kxk_then_1x1(digits_cnn, digits, tmp_path: Path) -> None:
    out = run_step("factorize-lowrank", {"rank_ratio": 0.5, "epochs": 0}, digits_cnn[0],
                   digits, tmp_path)
    assert out.metrics["ranks"]["features_3"] == {"rank": 32, "full_rank": 64,
                                                  "weights_before": 64 * 288,
                                                  "weights_after": 32 * (64 + 288)}
    module = load_trainable(out.path, ArtifactKind.torch_exported)
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    shapes = [(c.in_channels, c.out_channels, c.kernel_size) for c in convs]
    assert (32, 32, (3, 3)) in shapes and (32, 64, (1, 1)) in shapes


def test_energy_rule_keeps_a_full_rank_layer(digits_cnn, digits, tmp_path: Path) -> None:
    out = run_step("factorize-lowrank", {"energy": 1.0, "epochs": 0}, digits_cnn[0], digits,
                   tmp_path)
    assert out.metrics["factorized_layers"] == 0  # full energy never saves parameters
    assert out.metrics["parameter_ratio"] == 1.0


def test_distilled_student_is_a_quarter_within_three_points(digits_cnn, digits, baseline,
                                                             tmp_path: Path) -> None:
    out = run_step("distill", {"width": 0.45, "epochs": 8}, digits_cnn[0], digits, tmp_path)
    metrics = test_accuracy(out, digits)
    assert metrics["parameters"] <= baseline["parameters"] / 4
    assert out.metrics["student_parameters"] == metrics["parameters"]
    assert metrics["accuracy"] >= baseline["accuracy"] - 3.0


def test_distill_into_a_supplied_student(digits_cnn, digits, tmp_path: Path) -> None:
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                  torch.nn.Linear(32, 10))
    path = save_exported(student, [1, 8, 8], tmp_path / "student.pt2")
    out = run_step("distill", {"student": str(path), "epochs": 10, "lr": 5e-3}, digits_cnn[0],
                   digits, tmp_path / "out")
    assert out.metrics["student"] == "file"
    metrics = test_accuracy(out, digits)
    assert metrics["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    assert metrics["accuracy"] > 85.0


def test_student_with_another_output_is_rejected(digits_cnn, digits, tmp_path: Path) -> None:
    from tinymlaas.errors import InvalidInputError

    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    path = save_exported(student, [1, 8, 8], tmp_path / "student.pt2")
    with pytest.raises(InvalidInputError, match="output shape"):
        run_step("distill", {"student": str(path), "epochs": 1}, digits_cnn[0], digits,
                 tmp_path / "out")
