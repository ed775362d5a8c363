"""The external transformer: the file contract, run as a real subprocess."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from helpers import linear_onnx, step_python
from tinymlaas.errors import InvalidInputError, StepFailedError
from tinymlaas.transformers.external import docker_argv

SCRIPT = """
import json, os, shutil, sys
src, out, params = sys.argv[1], sys.argv[2], sys.argv[3]
config = json.load(open(params))
assert os.environ["TINYMLAAS_IN"] == src and os.listdir(src) == ["model.onnx"]
shutil.copy(os.path.join(src, "model.onnx"), os.path.join(out, "renamed.onnx"))
json.dump({"factor": config["factor"] * 2}, open(os.path.join(out, "metrics.json"), "w"))
print("external step done")
"""


@pytest.fixture
def script(shared_dir: Path) -> Path:
    path = shared_dir / "step.py"
    path.write_text(SCRIPT)
    return path


def test_command_contract(run_transformer, tmp_path: Path, script: Path) -> None:
    model = linear_onnx(tmp_path / "m.onnx")
    out = run_transformer("external", model, command=[step_python(), str(script), "{in}",
                                                      "{out}", "{params}"],
                          config={"factor": 21})
    assert out.metrics == {"factor": 42}
    assert out.path.name == "renamed.onnx" and out.kind == "onnx"
    assert onnx.load(str(out.path)) == onnx.load(str(model))


def test_failure_reports_the_last_line(run_transformer, tmp_path: Path) -> None:
    model = linear_onnx(tmp_path / "m.onnx")
    with pytest.raises(StepFailedError, match="exited with 3: boom"):
        run_transformer("external", model, command=[
            step_python(), "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])


def test_output_must_be_one_file(run_transformer, tmp_path: Path) -> None:
    model = linear_onnx(tmp_path / "m.onnx")
    with pytest.raises(StepFailedError, match="exactly one file"):
        run_transformer("external", model, command=[step_python(), "-c", "pass"])
    with pytest.raises(InvalidInputError, match="not found"):
        run_transformer("external", model, command=["/no/such/tool"])


def test_params_need_exactly_one_of_command_or_image(run_transformer, tmp_path: Path) -> None:
    model = linear_onnx(tmp_path / "m.onnx")
    with pytest.raises(InvalidInputError, match="exactly one of 'command' or 'image'"):
        run_transformer("external", model)


def test_docker_mapping_of_the_contract() -> None:
    argv = docker_argv("acme/quantizer:1", "/w/in", "/w/out", "/w/params.json")
    assert argv[:3] == ["docker", "run", "--rm"] and argv[-1] == "acme/quantizer:1"
    assert "/w/in:/in:ro" in argv and "/w/out:/out" in argv
    assert "/w/params.json:/params.json:ro" in argv and "--network=none" in argv
