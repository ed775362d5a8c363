"""Model files: safe formats accepted and described; unsafe or broken ones refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import onnx
import pytest
import torch
from onnx import external_data_helper

from helpers import linear_onnx
from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    UnsafeInputError,
    UnsupportedModelError,
)
from tinymlaas.formats.models import detect_model_kind, inspect_model, load_onnx_checked

LIMIT = 10**9


def test_onnx_is_described(tmp_path: Path) -> None:
    path = linear_onnx(tmp_path / "m.onnx")
    info = inspect_model(path, detect_model_kind(path), LIMIT)
    assert info.kind is ArtifactKind.onnx
    assert info.inputs[0].shape == ["N", 64] and info.inputs[0].dtype == "float32"
    assert info.outputs[0].shape == ["N", 10]
    assert info.parameters == 64 * 10 + 10


def test_corrupt_onnx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage that is not a protobuf" * 10)
    with pytest.raises(UnsupportedModelError, match=r"not a valid ONNX model|ONNX checker"):
        inspect_model(path, detect_model_kind(path), LIMIT)


def test_size_cap(tmp_path: Path) -> None:
    path = linear_onnx(tmp_path / "m.onnx")
    with pytest.raises(PayloadTooLargeError, match="limit"):
        load_onnx_checked(path, max_bytes=100)


def _with_external_data(tmp_path: Path, location: str) -> Path:
    model = onnx.load(str(linear_onnx(tmp_path / "m.onnx")))
    external_data_helper.convert_model_to_external_data(model, location="weights.bin",
                                                        size_threshold=0)
    onnx.save(model, str(tmp_path / "ext.onnx"))
    model = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(tmp_path / "ext.onnx"))
    return tmp_path / "ext.onnx"


def test_external_data_inside_the_folder_is_loaded(tmp_path: Path) -> None:
    path = _with_external_data(tmp_path, "weights.bin")
    model = load_onnx_checked(path, LIMIT)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in model.graph.initializer)


@pytest.mark.parametrize("location", ["../weights.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    path = _with_external_data(tmp_path, location)
    with pytest.raises(UnsafeInputError, match="outside the model's folder"):
        load_onnx_checked(path, LIMIT)


def test_external_data_through_a_symlink_is_refused(tmp_path: Path) -> None:
    path = _with_external_data(tmp_path, "link.bin")
    (tmp_path / "link.bin").symlink_to(tmp_path / "weights.bin")
    with pytest.raises(UnsafeInputError, match="link"):
        load_onnx_checked(path, LIMIT)


def test_pickles_are_refused_naming_the_safe_formats(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UnsafeInputError, match=r"ONNX \(\.onnx\).*\.pt2.*TorchScript"):
        detect_model_kind(path)
    raw = tmp_path / "model.bin"
    raw.write_bytes(pickle.dumps([1]))
    with pytest.raises(UnsafeInputError, match="pickle"):
        detect_model_kind(raw)


def test_plain_torch_save_of_a_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(4, 2), path)
    with pytest.raises(UnsafeInputError, match=r"torch\.save pickle"):
        detect_model_kind(path)


def test_torchscript_and_torch_export_are_accepted(tmp_path: Path) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    scripted = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(module), str(scripted))
    assert detect_model_kind(scripted) is ArtifactKind.torchscript
    with pytest.raises(InvalidInputError, match="input shape"):
        inspect_model(scripted, ArtifactKind.torchscript, LIMIT)
    info = inspect_model(scripted, ArtifactKind.torchscript, LIMIT, input_shape=[4])
    assert info.parameters == 15 and info.outputs[0].shape == ["N", 3]

    exported = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(module, (torch.zeros(1, 4),)), str(exported))
    assert detect_model_kind(exported) is ArtifactKind.torch_exported
    info = inspect_model(exported, ArtifactKind.torch_exported, LIMIT)
    assert info.inputs[0].shape == [1, 4] and info.parameters == 15


def test_unknown_formats(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n")
    with pytest.raises(InvalidInputError, match="unknown model format"):
        detect_model_kind(path)
