"""Streamed uploads of models and datasets: validation, limits, checksums, downloads."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from api_support import API, assert_error_shape, make_settings, new_user
from fastapi.testclient import TestClient

from tinymlaas.client import Client
from tinymlaas.server import create_app, open_studio


def _leftovers(studio) -> list[Path]:
    """Temp files anywhere under the data directory (uploads and artifact staging)."""
    home = studio.settings.home
    return [p for p in home.rglob("*") if p.is_file() and p.name.startswith(".")]


def test_raw_and_multipart_model_uploads_round_trip(http: TestClient, alice: Client,
                                                    tiny_onnx: Path, studio) -> None:
    data = tiny_onnx.read_bytes()
    model = alice.upload_model(tiny_onnx, name="raw", description="logreg")
    assert (model.name, model.kind, model.project) == ("raw", "onnx",
                                                       alice.me().default_project)
    assert [t.shape for t in model.inputs] == [["N", 1, 8, 8]]
    assert model.parameters == 64 * 10 + 10

    multipart = http.post(f"{API}/models", headers={"Authorization": f"Bearer {alice.token}"},
                          files={"file": ("from-form.onnx", data, "application/octet-stream")},
                          data={"sha256": hashlib.sha256(data).hexdigest()})
    assert multipart.status_code == 201, multipart.json()
    assert multipart.json()["name"] == "from-form"
    assert multipart.json()["artifact_sha"] == model.artifact_sha  # same bytes, same blob

    download = http.get(f"{API}/models/{model.id}/file",
                        headers={"Authorization": f"Bearer {alice.token}"})
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["content-type"] == "application/onnx"
    assert download.headers["content-disposition"] == 'attachment; filename="raw.onnx"'
    assert download.headers["x-content-sha256"] == hashlib.sha256(data).hexdigest()
    assert {m.name for m in alice.list_models()} == {"raw", "from-form"}
    assert _leftovers(studio) == []


def test_bad_uploads_register_nothing(http: TestClient, alice: Client, tiny_onnx: Path,
                                      studio) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    pickle = http.post(f"{API}/models", params={"filename": "model.pkl"}, headers=auth,
                       content=b"\x80\x04\x95" + b"\x00" * 64)
    assert pickle.status_code == 400
    assert_error_shape(pickle.json(), "unsafe_input")
    assert "pickle" in pickle.json()["message"]

    garbage = http.post(f"{API}/models", params={"filename": "model.onnx"}, headers=auth,
                        content=b"not an onnx model at all")
    assert 400 <= garbage.status_code < 500
    assert_error_shape(garbage.json())

    corrupted = http.post(f"{API}/models", params={"filename": "model.onnx"},
                          headers={**auth, "X-Content-SHA256": "0" * 64},
                          content=tiny_onnx.read_bytes())
    assert corrupted.status_code == 400
    assert corrupted.json()["details"]["received"] == hashlib.sha256(
        tiny_onnx.read_bytes()).hexdigest()

    empty = http.post(f"{API}/models", params={"filename": "model.onnx"}, headers=auth,
                      content=b"")
    assert empty.status_code == 400
    no_file = http.post(f"{API}/models", headers=auth, data={"name": "x"},
                        files={"other": ("a.txt", b"abc")})
    assert no_file.status_code == 400
    assert alice.list_models() == []
    assert _leftovers(studio) == []


@pytest.fixture
def small_limit_http(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    studio = open_studio(make_settings(tmp_path / "small", database_url,
                                       max_upload_bytes=2048))
    with TestClient(create_app(studio=studio), raise_server_exceptions=False) as client:
        client.studio = studio  # type: ignore[attr-defined]
        yield client
    studio.runs.shutdown(wait=True)
    studio.services.close()


def test_uploads_over_the_limit_are_413_and_leave_nothing(small_limit_http: TestClient,
                                                         tiny_onnx: Path) -> None:
    http = small_limit_http
    alice = new_user(http, "alice@example.com")
    auth = {"Authorization": f"Bearer {alice.token}"}
    data = tiny_onnx.read_bytes()
    assert len(data) > 2048
    declared = http.post(f"{API}/models", params={"filename": "m.onnx"}, headers=auth,
                         content=data)
    assert declared.status_code == 413
    assert_error_shape(declared.json(), "payload_too_large")
    assert declared.json()["details"]["limit_bytes"] == 2048

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while streaming
        for start in range(0, len(data), 512):
            yield data[start:start + 512]

    streamed = http.post(f"{API}/models", params={"filename": "m.onnx"}, headers=auth,
                         content=chunks())
    assert streamed.status_code == 413
    multipart = http.post(f"{API}/datasets", headers=auth,
                          files={"file": ("d.npz", b"\x00" * 5000)})
    assert multipart.status_code == 413
    assert alice.list_models() == [] and alice.list_datasets() == []
    assert _leftovers(http.studio) == []  # type: ignore[attr-defined]


def test_dataset_uploads_npz_and_csv(http: TestClient, alice: Client, tmp_path: Path,
                                     studio) -> None:
    rng = np.random.default_rng(0)
    X = rng.random((120, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 120)
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    npz = tmp_path / "blobs.npz"
    npz.write_bytes(buffer.getvalue())
    dataset = alice.upload_dataset(npz, test_fraction=0.25, seed=3)
    assert (dataset.name, dataset.num_samples, dataset.feature_shape) == ("blobs", 120,
                                                                          [1, 8, 8])
    assert dataset.num_classes == 3 and dataset.splits["seed"] == 3

    csv = tmp_path / "table.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40)))
    table = alice.upload_dataset(csv, name="table", label_column="label")
    assert (table.num_samples, table.feature_shape, table.source_format) == (40, [2], "csv")

    canonical = http.get(f"{API}/datasets/{dataset.id}/file",
                         headers={"Authorization": f"Bearer {alice.token}"})
    assert canonical.status_code == 200
    with np.load(io.BytesIO(canonical.content), allow_pickle=False) as arrays:
        np.testing.assert_array_equal(arrays["X"], X)
    assert {d.name for d in alice.list_datasets()} == {"blobs", "table"}
    assert _leftovers(studio) == []
