"""ONNX models with external-data files through the API: the ``external_data`` parts of a
model upload, checked against the locations the model references before anything loads."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from api_support import API, assert_error_shape, make_settings, new_user
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits
from starlette.requests import Request

from tinymlaas.api.deps import Studio
from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.api.uploads import receive_upload, sweep_stale_uploads
from tinymlaas.client import Client
from tinymlaas.server import create_app, open_studio


def _with_external_data(source: Path, folder: Path, location: str = "digits.onnx.data") -> Path:
    """``source`` saved again with every tensor in the one external file ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "digits.onnx"
    onnx.save_model(onnx.load(str(source)), str(target), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location, size_threshold=0)
    return target


def _retarget(model: Path, dest: Path, **entries: str) -> Path:
    """A copy of ``model`` whose first tensor's external-data entries are ``entries``."""
    proto = onnx.load(str(model), load_external_data=False)
    tensor = proto.graph.initializer[0]
    for entry in tensor.external_data:
        if entry.key in entries:
            entry.value = entries[entry.key]
    onnx.save(proto, str(dest))
    return dest


def _accuracy(model_bytes: bytes) -> tuple[float, np.ndarray]:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x})[0]
    return float((logits.argmax(1) == digits.target).mean()), logits


def _leftovers(studio: Studio) -> list[Path]:
    """Temp files and folders anywhere under the data directory."""
    return [p for p in studio.settings.home.rglob(".upload-*")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits_onnx(tmp_path_factory.mktemp("ref") / "digits.onnx")


@pytest.fixture
def external(reference: Path, tmp_path: Path) -> Path:
    return _with_external_data(reference, tmp_path / "external")


@pytest.fixture
def small_studio(tmp_path: Path, reference: Path) -> Iterator[Studio]:
    """A studio on SQLite whose uploads may be at most the model plus 1 KiB."""
    studio = open_studio(make_settings(tmp_path / "home", f"sqlite:///{tmp_path / 'm.db'}",
                                       max_upload_bytes=reference.stat().st_size + 1024))
    yield studio
    studio.runs.shutdown(wait=True)
    studio.services.close()


def _post(http: TestClient, token: str, model: Path, *sidecars: tuple[str, bytes],
          **params: str):
    files = [("file", (model.name, model.read_bytes(), "application/octet-stream"))]
    files += [("external_data", (name, data, "application/octet-stream"))
              for name, data in sidecars]
    return http.post(f"{API}/models", headers={"Authorization": f"Bearer {token}"},
                     params=params, files=files)


def test_multipart_upload_with_external_data_registers_a_self_contained_model(
        http: TestClient, alice: Client, reference: Path, external: Path, studio) -> None:
    sidecar = external.parent / "digits.onnx.data"
    assert external.stat().st_size < 1024 < sidecar.stat().st_size  # weights are outside
    response = _post(http, alice.token, external, ("digits.onnx.data", sidecar.read_bytes()),
                     name="ext")
    assert response.status_code == 201, response.json()
    model = response.json()
    assert model["parameters"] == 64 * 10 + 10
    assert model["inputs"][0]["shape"] == ["N", 1, 8, 8]

    download = http.get(f"{API}/models/{model['id']}/file",
                        headers={"Authorization": f"Bearer {alice.token}"})
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == model["artifact_sha"]
    stored = onnx.load_from_string(download.content)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
    accuracy, logits = _accuracy(download.content)
    _, expected = _accuracy(reference.read_bytes())
    assert accuracy > 0.95
    np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)
    # The same bytes as the local registration of the same files (one code path).
    local = studio.services.add_model(external, "ext-local")
    assert local.artifact_sha == model["artifact_sha"]
    assert _leftovers(studio) == []


def test_hostile_external_data_is_refused_and_nothing_stored_is_lost(
        http: TestClient, alice: Client, external: Path, tmp_path: Path, studio) -> None:
    kept = alice.upload_model(external, name="kept")  # the SDK sends the sidecar itself
    before = http.get(f"{API}/models/kept/file",
                      headers={"Authorization": f"Bearer {alice.token}"}).content
    sidecar = (external.parent / "digits.onnx.data").read_bytes()
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    uploads = studio.settings.home / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    (uploads / "planted.bin").write_bytes(sidecar)

    cases = [
        # (model, sidecar parts, status, error code, words of the message)
        (_retarget(external, hostile / "traversal.onnx", location="../../etc/passwd"),
         [("passwd", sidecar)], 400, "unsafe_input", "'../../etc/passwd' outside the model"),
        (_retarget(external, hostile / "absolute.onnx", location="/etc/passwd"),
         [("passwd", sidecar)], 400, "unsafe_input", "'/etc/passwd' outside the model"),
        (_retarget(external, hostile / "beyond.onnx", offset="2000", length="4096"),
         [("digits.onnx.data", sidecar)], 400, "invalid_input",
         f"claims bytes 2000 to 6096 of 'digits.onnx.data', which has {len(sidecar)} bytes"),
        (_retarget(external, hostile / "negative.onnx", offset="-8"),
         [("digits.onnx.data", sidecar)], 400, "invalid_input", "claims bytes -8"),
        (_retarget(external, hostile / "garbled.onnx", length="lots"),
         [("digits.onnx.data", sidecar)], 400, "invalid_input", "not a whole number"),
        (_retarget(external, hostile / "nested.onnx", location="weights/digits.onnx.data"),
         [("digits.onnx.data", sidecar)], 422, "unsupported_model",
         "external data in a subfolder ('weights/digits.onnx.data')"),
        # A file that happens to lie in the server's uploads folder is never read.
        (_retarget(external, hostile / "planted.onnx", location="planted.bin"),
         [("digits.onnx.data", sidecar)], 422,
         "unsupported_model", "external data 'planted.bin', which was not uploaded"),
        (external, [], 422, "unsupported_model",
         "external data 'digits.onnx.data', which was not uploaded"),
        (external, [("digits.onnx.data", sidecar), ("spare.bin", b"1234")], 422,
         "unsupported_model", "'spare.bin' was uploaded but the model does not reference it"),
        (external, [("../digits.onnx.data", sidecar)], 400, "invalid_input",
         "not a plain file name"),
        (external, [("/tmp/digits.onnx.data", sidecar)], 400, "invalid_input",
         "not a plain file name"),
        (external, [("digits.onnx.data", sidecar), ("digits.onnx.data", sidecar)], 400,
         "invalid_input", "sent twice"),
        (external, [("model.onnx", sidecar)], 400, "invalid_input", "may not be named"),
    ]
    for model, parts, status, code, words in cases:
        response = _post(http, alice.token, model, *parts)
        assert response.status_code == status, (model.name, parts[:0], response.json())
        assert_error_shape(response.json(), code)
        assert words in response.json()["message"], response.json()

    # A raw body cannot carry the external data: the same clear 422.
    raw = http.post(f"{API}/models", params={"filename": "digits.onnx"},
                    headers={"Authorization": f"Bearer {alice.token}"},
                    content=external.read_bytes())
    assert raw.status_code == 422 and "'digits.onnx.data'" in raw.json()["message"]
    # A model that is not ONNX takes no external data.
    torchscript = http.post(f"{API}/models", headers={"Authorization": f"Bearer {alice.token}"},
                            files=[("file", ("m.pkl", b"\x80\x04", "application/octet-stream")),
                                   ("external_data", ("w.bin", b"12", "application/octet-stream"))])
    assert torchscript.status_code == 400

    assert [m.name for m in alice.list_models()] == ["kept"]
    after = http.get(f"{API}/models/{kept.id}/file",
                     headers={"Authorization": f"Bearer {alice.token}"}).content
    assert after == before
    assert _leftovers(studio) == []
    assert (uploads / "planted.bin").read_bytes() == sidecar


def test_openapi_describes_the_external_data_parts(http: TestClient) -> None:
    spec = http.get(f"{API}/openapi.json").json()
    upload = spec["paths"]["/api/v1/models"]["post"]
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["external_data"]["type"] == "array"
    assert form["properties"]["external_data"]["items"]["format"] == "binary"
    assert {"413", "422"} <= set(upload["responses"])
    datasets = spec["paths"]["/api/v1/datasets"]["post"]["requestBody"]["content"]
    assert "external_data" not in datasets["multipart/form-data"]["schema"]["properties"]


def test_external_data_counts_towards_the_upload_limit(small_studio: Studio,
                                                       external: Path) -> None:
    with TestClient(create_app(studio=small_studio), raise_server_exceptions=False) as http:
        alice = new_user(http, "alice@example.com")
        sidecar = (external.parent / "digits.onnx.data").read_bytes()
        limit = small_studio.settings.max_upload_bytes
        assert external.stat().st_size + len(sidecar) <= limit  # fits: registered
        assert _post(http, alice.token, external,
                     ("digits.onnx.data", sidecar)).status_code == 201
        oversize = _post(http, alice.token, external, ("digits.onnx.data", sidecar),
                         ("more.bin", b"\0" * 4096))
        assert oversize.status_code == 413
        assert_error_shape(oversize.json(), "payload_too_large")
        assert oversize.json()["details"] == {"limit_bytes": limit}
        assert len(alice.list_models()) == 1
        assert _leftovers(small_studio) == []


def test_external_data_streams_to_disk_with_bounded_memory(tmp_path: Path) -> None:
    """32 MiB of external data in 64 KiB chunks: Python allocates far less than the body."""
    boundary = b"b0undary"
    chunk = b"\x5a" * (64 * 1024)
    count = 512
    head = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"m.onnx\"\r\n\r\nmodel\r\n--" + boundary +
            b"\r\nContent-Disposition: form-data; name=\"external_data\"; "
            b"filename=\"m.onnx.data\"\r\n\r\n")
    tail = b"\r\n--" + boundary + b"--\r\n"
    sent = 0

    async def receive() -> dict:
        nonlocal sent
        sent += 1
        if sent == 1:
            return {"type": "http.request", "body": head, "more_body": True}
        if sent <= count + 1:
            return {"type": "http.request", "body": chunk, "more_body": True}
        return {"type": "http.request", "body": tail, "more_body": False}

    request = Request({"type": "http", "method": "POST", "headers": [
        (b"content-type", b"multipart/form-data; boundary=" + boundary)]}, receive)
    tracemalloc.start()
    try:
        upload = asyncio.run(receive_upload(request, tmp_path, 64 * 1024**2, sidecars=True))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert upload.sidecars["m.onnx.data"].stat().st_size == count * len(chunk)
    assert upload.path.read_bytes() == b"model"
    assert peak < 4 * 1024**2, peak  # the body is 32 MiB
    upload.discard()
    assert list(tmp_path.iterdir()) == []


def test_sweep_removes_stale_staging_folders(tmp_path: Path) -> None:
    stale = tmp_path / ".upload-stale"
    (stale).mkdir()
    (stale / "model.onnx").write_bytes(b"x")
    (stale / "model.onnx.data").write_bytes(b"y")
    live = tmp_path / ".upload-live"
    live.mkdir()
    other = tmp_path / "keep"
    other.mkdir()
    os.utime(stale, (0, 0))
    os.utime(other, (0, 0))
    assert sweep_stale_uploads(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".upload-live", "keep"]
