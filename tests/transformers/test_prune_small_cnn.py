"""Structured pruning of CNNs with only a few channels per layer really removes channels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import InvalidInputError
from tinymlaas.transformers.torch.training import (
    count_macs,
    count_parameters,
    load_trainable,
    save_exported,
)


class TinyCnn(nn.Module):
    """1 -> 8 -> 16 channels on the 8x8 digits, then a 10-way head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(torch.flatten(self.pool(x), 1))


@pytest.fixture
def tiny_cnn(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_exported(TinyCnn(), [1, 8, 8], tmp_path / "tiny.pt2")


def _measure(path: Path) -> tuple[int, int, dict[str, int]]:
    module = load_trainable(path, ArtifactKind.torch_exported)
    widths = {name: m.out_channels for name, m in module.named_modules()
              if isinstance(m, nn.Conv2d)}
    return count_parameters(module), count_macs(module, [1, 8, 8]), widths


@pytest.mark.parametrize("target", ["parameters", "macs"])
def test_half_of_a_tiny_cnn_is_really_removed(run_transformer, tiny_cnn: Path,
                                              target: str) -> None:
    params, macs, widths = _measure(tiny_cnn)
    assert widths == {"conv1": 8, "conv2": 16}
    out = run_transformer("prune-structured", tiny_cnn, ArtifactKind.torch_exported,
                          ratio=0.5, target=target, epochs=1)
    after_params, after_macs, after_widths = _measure(out.path)
    assert after_params <= 0.7 * params
    assert after_macs <= 0.7 * macs
    measured = after_params / params if target == "parameters" else after_macs / macs
    assert measured <= 0.5
    assert measured >= 0.1  # not wiped out: the search stops near the target
    assert 1 <= after_widths["conv1"] < 8 and 1 <= after_widths["conv2"] < 16
    assert out.metrics["parameter_ratio"] == pytest.approx(after_params / params)
    assert out.metrics["mac_ratio"] == pytest.approx(after_macs / macs)
    assert out.metrics["layer_widths"]["head"] == 10


def test_round_to_keeps_multiples_on_a_tiny_cnn(run_transformer, tiny_cnn: Path) -> None:
    out = run_transformer("prune-structured", tiny_cnn, ArtifactKind.torch_exported,
                          ratio=0.5, round_to=4, epochs=0)
    params, _, _ = _measure(tiny_cnn)
    after_params, _, widths = _measure(out.path)
    assert after_params < params
    assert all(w % 4 == 0 and w >= 4 for w in widths.values())
    assert widths["conv2"] < 16


def test_a_model_with_nothing_to_prune_is_refused(run_transformer, tiny_cnn: Path) -> None:
    # round_to 16: conv1 (8) and conv2 (16) cannot shrink and stay multiples of 16.
    with pytest.raises(InvalidInputError, match=r"no layer can lose a channel.*"
                       r"conv1 \(8: already at its minimum of 16 channel\(s\) \(round_to\)\)"):
        run_transformer("prune-structured", tiny_cnn, ArtifactKind.torch_exported,
                        ratio=0.5, round_to=16, epochs=0)
    with pytest.raises(InvalidInputError, match=r"conv2 \(16: listed in keep_layers\).*"
                       r"head \(10: produces the model output\)"):
        run_transformer("prune-structured", tiny_cnn, ArtifactKind.torch_exported,
                        ratio=0.5, keep_layers=["conv1", "conv2"], epochs=0)
