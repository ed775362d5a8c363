"""The demo's model and pipelines: a small CNN trained on scikit-learn's digits, saved as a
``torch.export`` archive, and the baseline and four compression pipelines (fuse, dynamic
int8, static int8 per-channel, fp16) it goes through. ``tinymlaas demo``
(:mod:`tinymlaas.cli.demo`) runs them and prints the comparison.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_PIPELINES", "build_digits_cnn", "train_digits_cnn"]

DEMO_PIPELINES = ["baseline", "fuse", "dynamic-int8", "static-int8", "fp16"]


def build_digits_cnn():
    import torch
    from torch import nn

    class DigitsCNN(nn.Module):
        """Two conv blocks and a two-layer head: about 150k parameters."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                nn.MaxPool2d(2))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
                                      nn.Linear(128, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    return DigitsCNN()


def train_digits_cnn(target: Path, epochs: int = 15, seed: int = 0) -> tuple[Path, float]:
    """Train the demo CNN on the digits train split; save a ``.pt2``. Returns its test accuracy.

    Uses the same deterministic split the platform uses, so the accuracy is comparable.
    """
    import torch

    from tinymlaas.domain import DatasetSplits
    from tinymlaas.formats.datasets import load_builtin, split_indices

    torch.manual_seed(seed)
    data = load_builtin("digits")
    index = split_indices(len(data.X), DatasetSplits())
    X = torch.from_numpy(data.X)
    y = torch.from_numpy(data.y)
    X_train, y_train = X[index["train"]], y[index["train"]]
    model = build_digits_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(X_train), generator=generator)
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            loss_fn(model(X_train[batch]), y_train[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        test = index["test"]
        accuracy = float((model(X[test]).argmax(1) == y[test]).float().mean()) * 100
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes=({0: batch_dim},))
    torch.export.save(program, str(target))
    return target, accuracy
