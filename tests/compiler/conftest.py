"""Fixtures for the compiler tests: a small CNN trained on digits, float and int8 QDQ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from compiler_models import quantize_qdq


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Digits images as float32 NCHW in [0, 1] and their labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), y.astype(np.int64)


def _train_cnn(x: np.ndarray, y: np.ndarray, path: Path) -> Path:
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16 * 4 * 4, 10)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            t = torch.relu(self.c1(t))
            t = torch.nn.functional.max_pool2d(torch.relu(self.c2(t)), 2)
            return self.fc(t.flatten(1))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(3):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[i:i + 64]), yt[i:i + 64]).backward()
            opt.step()
    net.eval()
    torch.onnx.export(net, (xt[:1],), str(path), dynamo=True, external_data=False,
                      dynamic_shapes={"t": {0: torch.export.Dim("batch")}}, verbose=False)
    return path


@pytest.fixture(scope="session")
def cnn_models(digits: tuple[np.ndarray, np.ndarray],
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``float``, ``int8`` (per-channel, int8 activations) and ``uint8`` (per-tensor)."""
    x, y = digits
    root = tmp_path_factory.mktemp("cnn")
    float_path = _train_cnn(x, y, root / "float.onnx")
    return {
        "float": float_path,
        "int8": quantize_qdq(float_path, root / "int8.onnx", x[:64], per_channel=True),
        "uint8": quantize_qdq(float_path, root / "uint8.onnx", x[:64], per_channel=False,
                              activations="uint8"),
    }
