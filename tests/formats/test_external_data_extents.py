"""Local registration of ONNX models with external data: each tensor's bytes must lie inside
its file (checked before the weights load), and the model is stored as one self-contained
file."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.errors import InvalidInputError, UnsafeInputError
from tinymlaas.formats.models import external_data_locations, load_onnx_checked


@pytest.fixture
def external(tmp_path: Path) -> Path:
    reference = write_digits_onnx(tmp_path / "ref" / "logreg.onnx")
    target = tmp_path / "model" / "digits.onnx"
    target.parent.mkdir()
    onnx.save_model(onnx.load(str(reference)), str(target), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="digits.onnx.data",
                    size_threshold=0)
    return target


def _set(model: Path, tensor: int, **entries: str) -> None:
    proto = onnx.load(str(model), load_external_data=False)
    for entry in proto.graph.initializer[tensor].external_data:
        if entry.key in entries:
            entry.value = entries[entry.key]
    onnx.save(proto, str(model))


def test_locations_and_extents(external: Path) -> None:
    assert external_data_locations(external) == {"digits.onnx.data"}
    size = (external.parent / "digits.onnx.data").stat().st_size
    assert size == (64 * 10 + 10) * 4
    assert load_onnx_checked(external, 1 << 20).graph.initializer[0].raw_data

    _set(external, 1, offset=str(size - 8))  # the bias (40 bytes) runs past the end
    with pytest.raises(InvalidInputError, match=f"claims bytes {size - 8} to {size + 32} "
                                                f"of 'digits.onnx.data', which has {size}"):
        load_onnx_checked(external, 1 << 20)
    _set(external, 1, offset=str(size - 40), location="../digits.onnx.data")
    with pytest.raises(UnsafeInputError, match="outside the model's folder"):
        external_data_locations(external)


def test_cli_registers_external_data_and_refuses_a_bad_extent(cli, external: Path) -> None:
    code, out, err = cli("models", "add", external, "--name", "ext", "--json")
    assert code == 0, err
    assert json.loads(out)["parameters"] == 650
    _set(external, 0, length=str(10**9))
    code, _, err = cli("models", "add", external, "--name", "bad")
    assert code == 2 and "claims bytes 0 to 1000000000" in err
    code, out, _ = cli("models", "list", "--json")
    assert [m["name"] for m in json.loads(out)] == ["ext"]
