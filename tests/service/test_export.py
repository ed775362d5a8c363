"""A run's export (``tinymlaas export RUN --out DIR`` and the API's export zip) names files
relatively: no server path (home, data directory, temp files) appears in any exported file,
nor inside the zip archives among them."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain import Pipeline, PipelineStep
from tinymlaas.transformers.torch.training import save_exported

# An absolute POSIX path of at least two parts that is not part of a URL or a relative path.
ABSOLUTE = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+-]+/)+[\w.@+-]*")


class SmallCnn(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def _texts(path: Path, data: bytes | None = None) -> list[tuple[str, str]]:
    """``(name, text)`` of a file and, recursively, of every member of a zip archive."""
    data = path.read_bytes() if data is None else data
    if zipfile.is_zipfile(io.BytesIO(data)):
        found = []
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                assert not info.filename.startswith("/"), info.filename
                if not info.is_dir():
                    found += _texts(path / info.filename, archive.read(info))
        return found
    return [(str(path), data.decode("latin-1"))]


def _assert_no_server_paths(files: list[Path], *roots: Path) -> int:
    texts = [t for f in files for t in _texts(f)]
    for name, text in texts:
        for root in roots:
            assert str(root) not in text, f"{name} holds the server path {root}"
        assert ABSOLUTE.findall(text) == [], f"{name} holds absolute paths"
    return len(texts)


def _run(services, pipeline: Pipeline, model_path: Path, name: str) -> str:
    model = services.add_model(model_path, name)
    dataset = services.add_dataset("digits")
    run = services.create_run(pipeline, model=model.id, dataset=dataset.id)
    run = services.execute_run(run.id)
    assert run.status.value == "succeeded", run.error
    return run.id


def test_export_of_a_compile_c_run_holds_no_absolute_path(services, settings, tmp_path: Path,
                                                          cli) -> None:
    torch.manual_seed(0)
    models = tmp_path / "models"
    models.mkdir()
    teacher = save_exported(SmallCnn(8), [1, 8, 8], models / "teacher.pt2")
    student = save_exported(SmallCnn(4), [1, 8, 8], models / "student.pt2")
    pipeline = Pipeline(name="to-c", steps=[
        PipelineStep(transformer="distill", params={"student": str(student), "epochs": 1}),
        PipelineStep(transformer="export-onnx"),
        PipelineStep(transformer="compile-c", params={"verify_samples": 4}),
    ])
    run_id = _run(services, pipeline, teacher, "teacher")
    out = tmp_path / "export"
    files = services.export_run(run_id, out)
    names = sorted(p.name for p in files)
    assert {"metrics.json", "pipeline.yaml", "lineage.json"} <= set(names)
    # The student's file is named, not located.
    assert "student: student.pt2" in (out / "pipeline.yaml").read_text()
    count = _assert_no_server_paths(files, settings.home, tmp_path, Path.home())
    assert count >= 6  # the three records plus model.c, model.h and model.json in the zip
    c_output = next(p for p in files if p.name not in {"metrics.json", "pipeline.yaml",
                                                          "lineage.json"})
    with zipfile.ZipFile(c_output) as archive:
        members = {Path(n).name for n in archive.namelist()}
    assert {"model.c", "model.h", "model.json"} <= members

    # The CLI writes the same files.
    code, _, err = cli("export", run_id, "--out", str(tmp_path / "cli-export"))
    assert code == 0, err
    cli_files = [p for p in (tmp_path / "cli-export").iterdir() if p.is_file()]
    assert len(cli_files) == len(files)
    _assert_no_server_paths(cli_files, settings.home, tmp_path, Path.home())


def test_export_of_a_plain_run_holds_no_absolute_path(services, settings,
                                                      tmp_path: Path) -> None:
    onnx_path = write_digits_onnx(tmp_path / "logreg.onnx")
    run_id = _run(services, Pipeline(name="plain", steps=[PipelineStep(transformer="fuse")]),
                  onnx_path, "logreg")
    files = services.export_run(run_id, tmp_path / "export")
    assert _assert_no_server_paths(files, settings.home, tmp_path, Path.home()) == 4


@pytest.mark.parametrize("text, found", [
    ("/tmp/x/model.onnx", ["/tmp/x/model.onnx"]),
    ('"path": "/home/u/.local/share/tinymlaas/a/b"', ["/home/u/.local/share/tinymlaas/a/b"]),
    ("http://127.0.0.1:9/org/tiny/resolve/main/model.onnx", []),
    ("models/student.pt2 and 1/2", []),
])
def test_the_absolute_path_pattern(text: str, found: list[str]) -> None:
    assert ABSOLUTE.findall(text) == found
