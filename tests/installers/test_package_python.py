"""package-python: a PEP 427 wheel that installs offline and predicts exactly as ONNX Runtime."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from installer_models import float_model, int8_input_model, qdq_model, reference, two_io_model
from pydantic import ValidationError

from tinymlaas.domain import ArtifactKind, Device
from tinymlaas.errors import InvalidInputError
from tinymlaas.transformers.base import StepContext
from tinymlaas.transformers.registry import get_transformer, validate_params

DEVICE = Device(name="rpi-4", title="Raspberry Pi 4", category="sbc", arch="cortex-a72",
                clock_mhz=1500, ram_kb=4 * 1024**2, flash_kb=32 * 1024**2)


def package(model: Path, out: Path, device: Device | None = None, **params) -> Path:
    """Run package-python as the engine would; the wheel's path."""
    out.mkdir(parents=True)
    ctx = StepContext(input_path=model, input_kind=ArtifactKind.onnx,
                      params=validate_params("package-python", params), out_dir=out,
                      work_dir=out / "work", device=device)
    result = get_transformer("package-python").run(ctx)
    assert result.kind == ArtifactKind.python_wheel
    assert result.metrics["verify_max_abs_diff"] == 0.0
    assert result.metrics["wheel_sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest()
    return result.path


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment that sees this interpreter's packages (onnxruntime, numpy)
    through a .pth file, so wheels install into it with no index and no network."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def pip(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This interpreter's pip, acting on ``venv`` (which has no pip of its own)."""
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                           "--disable-pip-version-check", *args],
                          capture_output=True, text=True, check=False, timeout=300)


def run_in(venv: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "python"), "-c", code, *args],
                          capture_output=True, text=True, check=False, timeout=300)


PREDICT = """
import json, sys
import numpy as np
import {package} as m
x = np.load(sys.argv[1])
np.save(sys.argv[2], m.predict(x))
print(json.dumps({{"file": m.__file__, "inputs": m.inputs(), "outputs": m.outputs(),
                  "metadata": m.metadata(), "version": m.__version__}}))
"""


@pytest.mark.parametrize("kind", ["float", "qdq", "int8-input"])
def test_wheel_installs_offline_and_predicts_exactly(kind: str, tmp_path: Path,
                                                     venv: Path) -> None:
    build = {"float": float_model, "qdq": qdq_model, "int8-input": int8_input_model}[kind]
    model = build(tmp_path / f"{kind}.onnx")
    name = f"pkg-{kind}"
    wheel = package(model, tmp_path / "out", name=name, version="1.2.0rc1")
    assert wheel.name == f"pkg_{kind.replace('-', '_')}-1.2.0rc1-py3-none-any.whl"
    installed = pip(venv, "install", "--no-index", "--no-deps", str(wheel))
    assert installed.returncode == 0, installed.stderr

    rng = np.random.default_rng(7)
    if kind == "int8-input":
        x = rng.integers(-128, 127, size=(3, 8, 8, 3), endpoint=True).astype(np.int8)
    else:
        x = rng.normal(size=(5, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    want = reference(model, {"x": x})[0]

    package_name = name.replace("-", "_")
    done = run_in(venv, PREDICT.format(package=package_name), str(tmp_path / "x.npy"),
                  str(tmp_path / "y.npy"))
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["file"].startswith(str(venv))  # the installed copy, not a source tree
    got = np.load(tmp_path / "y.npy")
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert info["version"] == "1.2.0rc1"
    assert info["metadata"]["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert info["metadata"]["model"]["quantized"] is (kind != "float")
    assert [i["dtype"] for i in info["inputs"]] == [str(x.dtype)]

    # The console script: JSON on stdout by default, .npy with --output.
    script = venv / "bin" / name
    printed = subprocess.run([str(script), str(tmp_path / "x.npy")], capture_output=True,
                             text=True, check=True, timeout=300)
    from_json = np.asarray(json.loads(printed.stdout)["outputs"]["y"], dtype=want.dtype)
    np.testing.assert_array_equal(from_json, want)
    subprocess.run([str(script), str(tmp_path / "x.npy"), "--output", str(tmp_path / "o.npy")],
                   check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), want)

    # What pip and importlib.metadata see.
    shown = pip(venv, "show", name)
    assert "Version: 1.2.0rc1" in shown.stdout and "Requires: numpy, onnxruntime" in shown.stdout
    meta = run_in(venv, "import sys, json; from importlib import metadata as m; "
                  "print(json.dumps([m.version(sys.argv[1]), m.requires(sys.argv[1])]))", name)
    version, requires = json.loads(meta.stdout)
    assert version == "1.2.0rc1"
    assert sorted(r.split(">=")[0] for r in requires) == ["numpy", "onnxruntime"]
    checked = pip(venv, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_several_inputs_and_outputs_and_clear_errors(tmp_path: Path, venv: Path) -> None:
    model = two_io_model(tmp_path / "two.onnx")
    wheel = package(model, tmp_path / "out", name="two.io", version="0.1.0")
    assert pip(venv, "install", "--no-index", "--no-deps", str(wheel)).returncode == 0
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 0.25, np.float32)
    code = """
import json
import numpy as np
import two_io as m
a = np.arange(6, dtype=np.float32).reshape(2, 3)
b = np.full((2, 3), 0.25, np.float32)
out = m.predict({"a": a, "b": b})
errors = []
for bad in ({"a": a}, a, {"a": a, "b": b.reshape(3, 2)}, {"a": a, "b": b.astype(np.int64) + 1.5j}):
    try:
        m.predict(bad)
        errors.append(None)
    except (TypeError, ValueError) as exc:
        errors.append(str(exc))
# One lazily created session, shared by threads: every call gives the sequential answer.
from concurrent.futures import ThreadPoolExecutor
batches = [np.full((3, 3), i, np.float32) for i in range(64)]
with ThreadPoolExecutor(8) as pool:
    threaded = list(pool.map(lambda x: m.predict({"a": x, "b": x})[1], batches))
same = all(np.array_equal(t, m.predict({"a": x, "b": x})[1]) for t, x in zip(threaded, batches))
print(json.dumps({"out": [o.tolist() for o in out], "errors": errors, "threads_agree": same,
                  "one_session": m.session() is m.session()}))
"""
    done = run_in(venv, code)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    want = reference(model, {"a": a, "b": b})
    assert len(result["out"]) == 2
    for got, expected in zip(result["out"], want, strict=True):
        np.testing.assert_array_equal(np.asarray(got, np.float32), expected)
    assert result["threads_agree"] and result["one_session"]
    missing, positional, shape, dtype = result["errors"]
    assert "exactly the inputs ['a', 'b']" in missing
    assert "2 inputs" in positional
    assert "takes shape ['N', 3], got [3, 2]" in shape
    assert "takes float32 values, got complex128" in dtype
    # Several outputs from the command: an .npz by output name.
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    subprocess.run([str(venv / "bin" / "two-io"), f"a={tmp_path / 'a.npy'}",
                    f"b={tmp_path / 'b.npy'}", "-o", str(tmp_path / "out.npz")],
                   check=True, timeout=300)
    with np.load(tmp_path / "out.npz") as saved:
        assert sorted(saved.files) == ["scaled", "sum"]
        np.testing.assert_array_equal(saved["sum"], want[0])
        np.testing.assert_array_equal(saved["scaled"], want[1])
    wrong = subprocess.run([str(venv / "bin" / "two-io"), str(tmp_path / "a.npy")],
                           capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "2 inputs" in wrong.stderr


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_wheel_is_a_deterministic_pep427_archive_with_the_runs_metrics(tmp_path: Path) -> None:
    model = qdq_model(tmp_path / "digits.onnx")
    first = package(model, tmp_path / "a", device=DEVICE, description="Digits, int8")
    second = package(model, tmp_path / "b", device=DEVICE, description="Digits, int8")
    assert first.name == "digits-0.1.0-py3-none-any.whl"  # named after the model file
    assert first.read_bytes() == second.read_bytes()

    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        assert names[-1] == "digits-0.1.0.dist-info/RECORD"
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert set(names) >= {"digits/__init__.py", "digits/_cli.py", "digits/model.onnx",
                              "digits/metadata.json", "digits-0.1.0.dist-info/METADATA",
                              "digits-0.1.0.dist-info/WHEEL",
                              "digits-0.1.0.dist-info/entry_points.txt"}
        assert archive.read("digits/model.onnx") == model.read_bytes()
        rows = list(csv.reader(io.StringIO(archive.read(names[-1]).decode())))
        assert sorted(r[0] for r in rows) == sorted(names)
        for path, digest, size in rows:
            if path != names[-1]:
                data = archive.read(path)
                assert (digest, size) == (_record_hash(data), str(len(data)))
        wheel_file = archive.read("digits-0.1.0.dist-info/WHEEL").decode()
        assert "Wheel-Version: 1.0" in wheel_file and "Root-Is-Purelib: true" in wheel_file
        assert "Tag: py3-none-any" in wheel_file
        assert archive.read("digits-0.1.0.dist-info/entry_points.txt").decode() == \
            "[console_scripts]\ndigits = digits._cli:main\n"
        metadata_file = archive.read("digits-0.1.0.dist-info/METADATA").decode()
        described = json.loads(archive.read("digits/metadata.json"))

    head, _, body = metadata_file.partition("\n\n")
    headers = [line.split(": ", 1) for line in head.splitlines()]
    assert ["Metadata-Version", "2.1"] in headers and ["Name", "digits"] in headers
    assert ["Version", "0.1.0"] in headers and ["Summary", "Digits, int8"] in headers
    requires = [v for k, v in headers if k == "Requires-Dist"]
    assert [r.split(">=")[0] for r in requires] == ["numpy", "onnxruntime"]
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert described["model"]["sha256"] == sha
    assert described["model"]["size_bytes"] == model.stat().st_size
    assert described["model"]["parameters"] == 64 * 10 + 10
    assert described["model"]["quantized"] is True
    assert described["device"]["name"] == "rpi-4"
    assert described["inputs"] == [{"name": "x", "shape": ["N", 64], "dtype": "float32"}]
    # The same figures in the description, as a Markdown table.
    assert f"| Model SHA-256 | `{sha}` |" in body
    assert f"| Model size | {model.stat().st_size} bytes |" in body
    assert "| Parameters | 650 |" in body and "| Target device | rpi-4 (cortex-a72) |" in body


@pytest.mark.parametrize(("field", "value", "message"), [
    ("name", "", "1 to 64 characters"),
    ("name", "1model", "a letter first"),
    ("name", "my model", "a letter first"),
    ("name", "../evil", "a letter first"),
    ("name", "model-", "ending with a letter or digit"),
    ("name", "m" * 65, "at most 64 characters"),
    ("name", "numpy", "shadows a module"),
    ("name", "Json", "shadows a module"),
    ("name", "class", "Python keyword"),
    ("version", "v1.0", "PEP 440"),
    ("version", "1.0-beta", "PEP 440"),
    ("version", "01.2", "PEP 440"),
    ("version", "latest", "PEP 440"),
    ("version", "1.0\n", "PEP 440"),
    ("description", "two\nlines", "one line"),
    ("verbose", True, "Extra inputs are not permitted"),
])
def test_invalid_params_are_rejected_with_what_to_do(field: str, value: object,
                                                     message: str) -> None:
    with pytest.raises((ValidationError, InvalidInputError)) as caught:
        validate_params("package-python", {field: value})
    assert message in str(caught.value)


def test_names_normalize_and_default_from_the_model_file(tmp_path: Path) -> None:
    from tinymlaas.installers.wheel import default_name, import_name, normalize_name

    assert validate_params("package-python", {"name": "My_Model.v2"}).name == "My_Model.v2"
    assert normalize_name("My_Model.v2") == "my-model-v2"
    assert import_name("My_Model.v2") == "my_model_v2"
    assert default_name(Path("kws-int8.onnx")) == "kws-int8"
    assert default_name(Path("ab" * 32)) == "model"  # a stored blob, named by its digest
    assert default_name(Path("2024 model.onnx")) == "model"
    wheel = package(float_model(tmp_path / "f.onnx"), tmp_path / "o", name="My_Model.v2")
    assert wheel.name == "my_model_v2-0.1.0-py3-none-any.whl"


def test_a_file_that_is_not_onnx_is_rejected(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(InvalidInputError, match="not an ONNX model"):
        package(bogus, tmp_path / "out")


def test_registered_as_an_installer() -> None:
    transformer = get_transformer("package-python")
    assert transformer.accepts == frozenset({ArtifactKind.onnx})
    assert transformer.produces == ArtifactKind.python_wheel
    assert transformer.needs == "none"
