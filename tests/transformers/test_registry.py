"""The registry: built-ins, entry-point plug-ins, schemas, parameter validation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tinymlaas.errors import ConflictError, InvalidInputError, NotFoundError
from tinymlaas.transformers import registry


def test_builtins_are_listed_with_contracts() -> None:
    names = {t.name for t in registry.list_transformers()}
    assert {"export-onnx", "fuse", "quantize-dynamic", "quantize-static", "fp16",
            "external"} <= names
    static = registry.get_transformer("quantize-static")
    assert static.needs == "calibration" and static.produces == "onnx"


def test_plugins_come_in_through_entry_points() -> None:
    copy = registry.get_transformer("test-copy")
    assert type(copy).__module__ == "tinymlaas_testplugins"


def test_unknown_transformer_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError) as info:
        registry.get_transformer("quantise")
    assert "unknown transformer 'quantise'" in info.value.message
    assert "quantize-static" in info.value.message and "fuse" in info.value.message


def test_params_are_validated_naming_the_field() -> None:
    with pytest.raises(InvalidInputError, match=r"per_channel: Input should be a valid boolean"):
        registry.validate_params("quantize-static", {"per_channel": "maybe"})
    with pytest.raises(InvalidInputError, match=r"colour: Extra inputs are not permitted"):
        registry.validate_params("fuse", {"colour": "red"})
    with pytest.raises(InvalidInputError, match=r"calibration: Input should be 'minmax'"):
        registry.validate_params("quantize-static", {"calibration": "kl"})
    params = registry.validate_params("quantize-static", {})
    assert params.per_channel is True and params.format == "qdq"


def test_schema_describes_the_params() -> None:
    schema = registry.params_schema("quantize-static")
    props = schema["properties"]
    assert props["num_samples"]["default"] == 256 and props["num_samples"]["exclusiveMinimum"] == 0
    assert set(props) >= {"format", "per_channel", "calibration", "nodes_to_exclude",
                          "op_types_to_exclude"}


def test_a_duplicate_name_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "dupe-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dupe\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[tinymlaas.transformers]\nfuse = tinymlaas_testplugins:Copy\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    registry.reset()
    try:
        with pytest.raises(ConflictError, match=r"'fuse' .* already registered"):
            registry.get_transformer("fuse")
    finally:
        monkeypatch.undo()
        registry.reset()
    assert registry.get_transformer("fuse").name == "fuse"
