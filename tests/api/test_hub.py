"""Imports from the Hugging Face Hub: through ``HF_ENDPOINT`` (a local server speaking the
few endpoints ``hf_hub_download`` uses) and from a pre-populated offline cache."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from api_support import API, assert_error_shape
from fastapi.testclient import TestClient

from tinymlaas.client import Client

COMMIT = "a" * 40


class FakeHub:
    """Serves ``HEAD``/``GET /[datasets/]{repo}/resolve/{revision}/{file}``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str]] = []
        self.plain_404 = False
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                if self.path.startswith("/api/models/"):
                    self._listing()
                    return
                if self.path.startswith("/api/"):  # nothing else of the Hub's API is here
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                key = re.sub(r"/resolve/[^/]+/", "/", self.path.split("?")[0], count=1)
                data = hub.files.get(key)
                if data is None:
                    self.send_response(404)
                    if not hub.plain_404:
                        self.send_header("X-Error-Code", "EntryNotFound")
                        self.send_header("X-Error-Message", "Entry not found")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _listing(self) -> None:
                """``/api/models/{repo}[/revision/{rev}]`` (the repo's files with their
                sizes) and ``.../tree/{rev}`` (the same as a tree)."""
                repo = self.path.split("?")[0].removeprefix("/api/models/")
                repo, tree, _ = repo.partition("/tree/")
                repo = repo.split("/revision/")[0]
                files = {key.removeprefix(f"/{repo}/"): data for key, data in hub.files.items()
                         if key.startswith(f"/{repo}/")}
                payload = json.dumps(
                    [{"type": "file", "path": name, "size": len(data),
                      "oid": hashlib.sha1(data).hexdigest()} for name, data in files.items()]
                    if tree else
                    {"id": repo, "sha": COMMIT, "siblings": [
                        {"rfilename": name, "size": len(data)} for name, data in files.items()]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def fake_hub(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> Iterator[FakeHub]:
    buffer = io.BytesIO()
    rng = np.random.default_rng(1)
    np.savez(buffer, X=rng.random((60, 4), dtype=np.float32), y=rng.integers(0, 2, 60))
    hub = FakeHub({"/org/tiny/model.onnx": tiny_onnx.read_bytes(),
                   "/datasets/org/points/train.npz": buffer.getvalue()})
    thread = threading.Thread(target=hub.server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    yield hub
    hub.server.shutdown()


def test_import_through_hf_endpoint(http: TestClient, alice: Client, fake_hub: FakeHub,
                                    tiny_onnx: Path, tmp_path: Path) -> None:
    model = alice.import_model("org/tiny", "model.onnx", name="hub-model")
    assert (model.name, model.kind, model.description) == ("hub-model", "onnx",
                                                           "hf://org/tiny/model.onnx")
    assert model.artifact_sha == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    assert ("GET", "/org/tiny/resolve/main/model.onnx") in fake_hub.requests
    # The second import of the same file comes from the cache: no new GET.
    gets = sum(1 for method, _ in fake_hub.requests if method == "GET")
    again = alice.import_model("org/tiny", "model.onnx", name="hub-model-2")
    assert again.artifact_sha == model.artifact_sha
    assert sum(1 for method, _ in fake_hub.requests if method == "GET") == gets

    dataset = alice.import_dataset("org/points", "train.npz")
    assert (dataset.name, dataset.num_samples, dataset.feature_shape) == ("train", 60, [4])

    missing = http.post(f"{API}/models/hub", headers={"Authorization": f"Bearer {alice.token}"},
                        json={"repo_id": "org/tiny", "filename": "absent.onnx"})
    assert missing.status_code == 404
    assert_error_shape(missing.json(), "not_found")
    bad = http.post(f"{API}/models/hub", headers={"Authorization": f"Bearer {alice.token}"},
                    json={"repo_id": "../etc", "filename": "../passwd"})
    assert bad.status_code == 400
    assert {m.name for m in alice.list_models()} == {"hub-model", "hub-model-2"}


def _populate_cache(cache: Path, repo_id: str, filename: str, data: bytes) -> None:
    """The exact layout hf_hub_download writes: refs, blobs and snapshot symlinks."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(Path("../../blobs") / blob.name)


def test_import_offline_from_the_cache(http: TestClient, alice: Client, tiny_onnx: Path,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "offline-cache"
    _populate_cache(cache, "org/cached", "model.onnx", tiny_onnx.read_bytes())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    model = alice.import_model("org/cached", "model.onnx")
    assert model.name == "model"
    assert model.artifact_sha == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()

    not_cached = http.post(f"{API}/models/hub",
                           headers={"Authorization": f"Bearer {alice.token}"},
                           json={"repo_id": "org/elsewhere", "filename": "model.onnx"})
    # Offline and not cached: the file may exist, so "try again", not "not found".
    assert not_cached.status_code == 503
    assert_error_shape(not_cached.json(), "service_unavailable")
    message = not_cached.json()["message"]
    assert "offline mode (HF_HUB_OFFLINE=1)" in message
    assert "org/elsewhere/model.onnx is not in the local cache" in message
    assert [m.name for m in alice.list_models()] == ["model"]


class _NoWait:
    """``time`` for huggingface_hub's retry loop, without the waiting."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def test_an_unreachable_hub_is_503_with_a_retry_hint(
        http: TestClient, alice: Client, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    no_wait = _NoWait()
    monkeypatch.setattr("huggingface_hub.utils._http.time", no_wait)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    auth = {"Authorization": f"Bearer {alice.token}"}
    for route, repo in (("models/hub", "org/tiny"), ("datasets/hub", "org/points")):
        response = http.post(f"{API}/{route}", headers=auth,
                             json={"repo_id": repo, "filename": "model.onnx"})
        assert response.status_code == 503, response.text
        body = response.json()
        assert_error_shape(body, "service_unavailable")
        assert body["message"].startswith(
            "the Hugging Face Hub cannot be reached (http://127.0.0.1:9: ")
        assert "ConnectError" in body["message"] or "refused" in body["message"]
        assert body["message"].endswith("try again later, or set HF_HUB_OFFLINE=1 with the "
                                        "file in the local cache")
        assert body["details"]["kind"] == "hub_unreachable"
        assert body["details"]["endpoint"] == "http://127.0.0.1:9"
        assert body["details"]["retry_after_s"] > 0
    assert no_wait.sleeps  # the hub client retried before giving up
    assert alice.list_models() == [] and alice.list_datasets() == []


def test_a_hub_answering_404_stays_404(http: TestClient, alice: Client,
                                       fake_hub: FakeHub) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    for repo, filename in (("org/tiny", "absent.onnx"), ("org/no-such-repo", "model.onnx")):
        response = http.post(f"{API}/models/hub", headers=auth,
                             json={"repo_id": repo, "filename": filename})
        assert response.status_code == 404, response.text
        assert_error_shape(response.json(), "not_found")
        assert response.json()["message"] == f"{repo}/{filename} was not found on the Hub"
    fake_hub.plain_404 = True  # a mirror that answers a bare 404, no X-Error-Code
    response = http.post(f"{API}/models/hub", headers=auth,
                         json={"repo_id": "org/other", "filename": "model.onnx"})
    assert response.status_code == 404, response.text
    assert_error_shape(response.json(), "not_found")


def test_a_download_over_the_limit_is_refused_before_it_starts(
        http: TestClient, alice: Client, studio, fake_hub: FakeHub, tmp_path: Path) -> None:
    """A hostile user cannot fill the server's disk through the Hub: the sizes the Hub
    gives are checked before anything is fetched (one file, or a whole model repo)."""
    auth = {"Authorization": f"Bearer {alice.token}"}
    fake_hub.files.update({"/org/big/config.json": b'{"model_type": "bert"}',
                           "/org/big/model.safetensors": b"w" * 5000,
                           "/org/big/pytorch_model.bin": b"p" * 100_000})
    studio.settings.max_model_bytes = 1000

    one = http.post(f"{API}/models/hub", headers=auth,
                    json={"repo_id": "org/big", "filename": "model.safetensors"})
    assert one.status_code == 413, one.text
    assert_error_shape(one.json(), "payload_too_large")
    assert one.json()["details"] == {"limit_bytes": 1000, "size_bytes": 5000}

    repo = http.post(f"{API}/models/hub", headers=auth, json={"repo_id": "org/big"})
    assert repo.status_code == 413, repo.text
    # The weights and config it would fetch (the pickled .bin is never among them).
    assert repo.json()["details"] == {"limit_bytes": 1000, "size_bytes": 5000 + 22}
    assert not [path for method, path in fake_hub.requests
                if method == "GET" and "/resolve/" in path], fake_hub.requests
    assert not list((tmp_path / "hf-cache").rglob("*.safetensors"))

    # Under a limit that the .bin alone would break, the import goes past the check and
    # fetches only the files it needs.
    studio.settings.max_model_bytes = 50_000
    past = http.post(f"{API}/models/hub", headers=auth, json={"repo_id": "org/big"})
    assert past.status_code != 413, past.text
    fetched = {path for method, path in fake_hub.requests if method == "GET"}
    assert f"/org/big/resolve/{COMMIT}/model.safetensors" in fetched
    assert not any(path.endswith(".bin") for path in fetched)
    assert alice.list_models() == []
