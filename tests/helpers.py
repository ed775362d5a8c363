"""Small builders for test inputs (ONNX graphs, zips, datasets)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def need_service(available: bool, what: str) -> None:
    """Fail, naming what is missing, when a service or tool the test needs is not there.

    ``make test`` installs every tool the suite needs and the machine runs its services, so
    a missing one is a broken setup, never a reason to pass quietly.
    """
    if not available:
        pytest.fail(f"{what} is required by this test but is not available "
                    "(`make test` installs the tools; start the service)")


@functools.cache
def step_python() -> str:
    """A Python that command steps can run: this one, unless steps run as the sandbox user
    (tests run as root) and cannot reach it (a venv under a private home); then the system's.
    """
    candidates = [sys.executable, "/usr/local/bin/python3", "/usr/bin/python3"]
    for exe in candidates:
        if not os.path.exists(exe):
            continue
        if os.geteuid() != 0:
            return exe
        try:
            probe = subprocess.run([exe, "-c", "pass"], user="nobody", capture_output=True,
                                   check=False, env={"PATH": "/usr/bin:/bin"}, cwd="/")
        except OSError:
            continue
        if probe.returncode == 0:
            return exe
    pytest.fail(f"none of {candidates} can be run by the sandbox user 'nobody'; command "
                "steps need a Python it can execute")


def linear_onnx(path: Path, features: int = 64, classes: int = 10, seed: int = 0) -> Path:
    """A one-layer classifier ``softmax-free logits = x @ W + b`` with a dynamic batch."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(classes, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None,
              compress: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, target)
    return path


def png_bytes(value: int, size: int = 8) -> bytes:
    import io

    from PIL import Image

    img = Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def other_digits_onnx(path: Path) -> Path:
    """The digits classifier of ``write_digits_onnx`` with one bias changed: another model
    (another content hash) with the same inputs and outputs."""
    from tinymlaas.api.testing import write_digits_onnx

    model = onnx.load(str(write_digits_onnx(path)))
    bias = model.graph.initializer[1]
    values = numpy_helper.to_array(bias).copy()
    values[0] += 1.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(path))
    return path
