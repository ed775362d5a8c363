"""Hostile input, replayed by a second user against a real server: every bad file, number,
YAML document or request body gets a clear 4xx in bounded time (a hang fails the 30 s
client timeout), nothing is registered, what the first user stored still downloads
intact, and the server stays healthy. Identical content shared by two users never tells
the second one the first one's file names or times."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.lib import format as npy
from security_support import API, Server, finished, wait_for

from helpers import png_bytes, write_zip
from tinymlaas.client import Client

#: A request answered later than this is a hang.
TIMEOUT = httpx.Timeout(30.0)


def http(server: Server, client: Client) -> httpx.Client:
    raw = server.raw(client)
    raw.timeout = TIMEOUT
    return raw


def assert_refused(response: httpx.Response, status: int | set[int],
                   code: str | None = None) -> dict[str, Any]:
    """A 4xx with the one error body shape (and ``code`` when given)."""
    allowed = {status} if isinstance(status, int) else status
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in body["message"]
    if code is not None:
        assert body["code"] == code, body
    return body


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def forged_npz() -> bytes:
    """An NPZ whose X header claims 2 x 2**40 float64 values while holding 64 bytes."""
    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                        "shape": (2, 2**40)})
    y = io.BytesIO()
    np.save(y, np.arange(2))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("X.npy", header.getvalue() + b"\0" * 64)
        zf.writestr("y.npy", y.getvalue())
    return buffer.getvalue()


def multipart(boundary: str, filename: str, data: bytes, *, close: bool = True) -> bytes:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + data
    return body + (f"\r\n--{boundary}--\r\n".encode() if close else b"")


@pytest.fixture
def stored(server: Server, alice: Client, tiny_onnx: Path) -> Iterator[Callable[[], None]]:
    """Alice's model and dataset; yields a check that they still download intact, that
    alice's lists are unchanged and that the server is healthy."""
    alice.upload_model(tiny_onnx, name="alice-model")
    data = npz_bytes(X=np.random.default_rng(0).random((40, 4)), y=np.arange(40) % 3)
    with http(server, alice) as raw:
        created = raw.post(f"{API}/datasets", params={"filename": "alice.npz"}, content=data)
        assert created.status_code == 201, created.text
        canonical = raw.get(f"{API}/datasets/{created.json()['id']}/file").content
    before = ([m.id for m in alice.list_models()], [d.id for d in alice.list_datasets()])

    def check() -> None:
        with http(server, alice) as raw:
            assert raw.get(f"{API}/health").status_code == 200
            model = raw.get(f"{API}/models/alice-model/file")
            assert model.status_code == 200
            assert sha256(model.content) == sha256(tiny_onnx.read_bytes())
            dataset = raw.get(f"{API}/datasets/alice/file")
            assert dataset.status_code == 200 and sha256(dataset.content) == sha256(canonical)
        assert ([m.id for m in alice.list_models()],
                [d.id for d in alice.list_datasets()]) == before
        log = server.log.read_text(errors="replace")
        assert "Traceback" not in log and "internal_error" not in log, log[-3000:]

    yield check


# 1. datasets ------------------------------------------------------------------------------


def test_hostile_datasets_are_refused(server: Server, mallory: Client,
                                      stored: Callable[[], None]) -> None:
    X = np.ones((4, 3))
    image = png_bytes(10)
    hostile: list[tuple[str, bytes, dict[str, str], int, str, str]] = [
        ("label-2-31.npz", npz_bytes(X=X, y=np.array([0, 1, 2, 2**31])), {}, 400,
         "invalid_input", "the limit is 10000"),
        ("label-1e30.npz", npz_bytes(X=X, y=np.array([0.0, 1.0, 2.0, 1e30])), {}, 400,
         "invalid_input", "the limit is 10000"),
        ("label-nan.npz", npz_bytes(X=X, y=np.array([0.0, 1.0, np.nan, 1.0])), {}, 400,
         "invalid_input", "finite"),
        ("label-inf.npz", npz_bytes(X=X, y=np.array([0.0, np.inf, 1.0, 1.0])),
         {"task": "classification"}, 400, "invalid_input", "finite"),
        ("negative.npz", npz_bytes(X=X, y=np.array([0, -5, 1, 1])),
         {"task": "classification"}, 400, "invalid_input", "non-negative"),
        ("fraction.npz", npz_bytes(X=X, y=np.array([0.0, 0.5, 1.0, 1.0])),
         {"task": "classification"}, 400, "invalid_input", "whole numbers"),
        ("text-regression.npz", npz_bytes(X=X, y=np.array(["a", "b", "a", "b"])),
         {"task": "regression"}, 400, "invalid_input", "numeric targets"),
        ("features-nan.npz", npz_bytes(X=np.full((4, 3), np.nan), y=np.arange(4)), {}, 400,
         "invalid_input", "finite"),
        ("features-inf.npz", npz_bytes(X=np.full((4, 3), -np.inf), y=np.arange(4)), {}, 400,
         "invalid_input", "finite"),
        ("no-samples.npz", npz_bytes(X=np.ones((0, 3)), y=np.arange(0)), {}, 400,
         "invalid_input", "at least one sample"),
        ("nine-dims.npz", npz_bytes(X=np.ones((2,) + (1,) * 8), y=np.arange(2)), {}, 400,
         "invalid_input", "feature dimensions"),
        ("forged.npz", forged_npz(), {}, 400, "invalid_input", "declares shape"),
        ("bomb.npz", npz_bytes_compressed(), {}, 413, "payload_too_large", "zip bomb"),
        ("huge-label.csv", b"a,b,label\n1,2,0\n3,4,1e30\n", {}, 400, "invalid_input",
         "the limit is 10000"),
        ("nan-label.csv", b"a,b,label\n1,2,0\n3,4,nan\n", {}, 400, "invalid_input", "finite"),
        ("ragged.csv", b"a,b,label\n1,2,0\n3,1\n", {}, 400, "invalid_input",
         "line 3 has 2 fields"),
        ("big-field.csv", b'a,label\n"' + b"1" * 200_000 + b'",0\n', {}, 400,
         "invalid_input", "not a readable CSV"),
        ("huge-image.zip", _zip({"a/0.png": image, "b/0.png": image}),
         {"image_width": "5000", "image_height": "5000"}, 422, "validation_error",
         "image_width"),
    ]
    with http(server, mallory) as raw:
        for filename, data, params, status, code, words in hostile:
            answer = raw.post(f"{API}/datasets", params={"filename": filename, **params},
                              content=data)
            body = assert_refused(answer, status, code)
            assert words in body["message"], (filename, body["message"])
            assert "\n" not in body["message"]
        object_labels = io.BytesIO()
        np.savez(object_labels, X=X, y=np.array([{"a": 1}] * 4, dtype=object))
        pickled = raw.post(f"{API}/datasets", params={"filename": "objects.npz"},
                           content=object_labels.getvalue())
        assert_refused(pickled, 400, "unsafe_input")
        assert raw.get(f"{API}/datasets").json() == []
        # Text labels are class names: mapped, in sorted order, to class indices.
        named = raw.post(f"{API}/datasets", params={"filename": "named.npz"},
                         content=npz_bytes(X=X, y=np.array(["dog", "cat", "dog", "ant"])))
        assert named.status_code == 201, named.text
        assert named.json()["class_names"] == ["ant", "cat", "dog"]
        assert named.json()["task"] == "classification"
    stored()
    assert _leftover_uploads(server) == []


def npz_bytes_compressed() -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=np.zeros((4, 4_000_000), np.float32), y=np.arange(4))
    return buffer.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _leftover_uploads(server: Server) -> list[Path]:
    return sorted((server.home / "uploads").glob(".upload-*"))


def test_class_limit_is_the_servers_setting(make_server: Callable[..., Server],
                                            tmp_path: Path) -> None:
    server = make_server(TINYMLAAS_MAX_CLASSES="3")
    alice = server.user("alice@example.com")
    mallory = server.user("mallory@example.com")
    alice.add_builtin_dataset(name="digits")
    folders = write_zip(tmp_path / "four.zip",
                        {f"{c}/0.png": png_bytes(40 * i) for i, c in enumerate("abcd")})
    with http(server, mallory) as raw:
        answer = raw.post(f"{API}/datasets", params={"filename": "four.zip"},
                          content=folders.read_bytes())
        body = assert_refused(answer, 400, "invalid_input")
        assert "4 class folders; the limit is 3" in body["message"]
        answer = raw.post(f"{API}/datasets", params={"filename": "labels.npz"},
                          content=npz_bytes(X=np.ones((4, 2)), y=np.array([0, 1, 2, 3])))
        body = assert_refused(answer, 400, "invalid_input")
        assert body["details"]["max_classes"] == 3
        answer = raw.post(f"{API}/datasets", params={"filename": "names.csv"},
                          content=b"a,label\n1,w\n2,x\n3,y\n4,z\n")
        assert "more than 3 different class names" in assert_refused(answer, 400)["message"]
        assert raw.get(f"{API}/datasets").json() == []
    assert [d.name for d in alice.list_datasets()] == ["digits"]


# 2. YAML ----------------------------------------------------------------------------------


BOMB = "".join(
    [f"a0: &a0 [{', '.join(['lol'] * 9)}]\n"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)]
    + ["steps: *a9\n"])


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"TINYMLAAS_SERVER", "TINYMLAAS_SERVER_URL", "TINYMLAAS_TOKEN"}}
    env.update(TINYMLAAS_HOME=str(home), TINYMLAAS_DATABASE_URL=f"sqlite:///{home}/meta.db")
    return subprocess.run([sys.executable, "-m", "tinymlaas.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_refuses_a_yaml_alias_bomb(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    started = _cli(tmp_path / "home", "run", str(bomb), "--model", "m", "--dataset", "d")
    assert started.returncode == 2, started
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1, started.stderr
    assert "anchors and aliases are not allowed" in lines[0]
    assert "Traceback" not in started.stderr

    for name, text, words in [
        ("deep.yaml", "steps: " + "[" * 5000 + "]" * 5000 + "\n", "levels deep"),
        ("digits.yaml", "steps: [fuse]\nseed: " + "9" * 5000 + "\n", "invalid YAML"),
        ("inf.yaml", "steps:\n  - transformer: fuse\n    timeout_s: .inf\n", "finite"),
        ("many.yaml", "steps: [" + ", ".join(["fuse"] * 65) + "]\n", "at most 64"),
    ]:
        path = tmp_path / name
        path.write_text(text)
        answer = _cli(tmp_path / "home", "run", str(path), "--model", "m", "--dataset", "d")
        assert answer.returncode == 2, answer
        assert len(answer.stderr.strip().splitlines()) == 1, answer.stderr
        assert words in answer.stderr, answer.stderr
    big = tmp_path / "big.yaml"
    big.write_text("steps: [fuse]\n" + "#" * (2 * 1024 * 1024) + "\n")
    answer = _cli(tmp_path / "home", "run", str(big), "--model", "m", "--dataset", "d")
    assert answer.returncode == 2 and "pipeline file is a few lines" in answer.stderr
    listed = _cli(tmp_path / "home", "runs", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


# 3. numbers -------------------------------------------------------------------------------


def _json(value: Any) -> bytes:
    """JSON as a hostile client writes it: NaN and Infinity literals allowed."""
    return json.dumps(value, allow_nan=True).encode()


def test_hostile_numbers_are_refused(server: Server, mallory: Client, tiny_onnx: Path,
                                     stored: Callable[[], None]) -> None:
    mallory.upload_model(tiny_onnx, name="m")
    mallory.add_builtin_dataset(name="d")
    templates = [t.name for t in mallory.list_templates()]
    devices = [d.name for d in mallory.list_devices()]
    inf, nan = float("inf"), float("nan")

    def run(steps: list[Any], **extra: Any) -> dict[str, Any]:
        return {"model": "m", "dataset": "d", "pipeline": {"steps": steps, **extra}}

    posts: list[tuple[str, dict[str, Any], int]] = [
        ("/runs", run([{"transformer": "fuse", "timeout_s": inf}]), 422),
        ("/runs", run([{"transformer": "fuse", "timeout_s": nan}]), 422),
        ("/runs", run([{"transformer": "fuse", "timeout_s": 1e308}]), 400),
        ("/runs", run([{"transformer": "fuse", "timeout_s": 8 * 24 * 3600}]), 400),
        ("/runs", run([{"transformer": "fuse", "memory_mb": 2**60}]), 400),
        ("/runs", run(["fuse"] * 65), 400),
        ("/runs", run([{"quantize-static": {"num_samples": inf}}]), 422),
        ("/runs", run([{"quantize-static": {"num_samples": 10**12}}]), 400),
        ("/runs", run([{"prune-structured": {"seed": 2**40}}]), 400),
        ("/runs", run([{"prune-structured": {"layer_ratios": {"conv": 7.0}}}]), 400),
        ("/runs", run([{"transformer": "fuse", "params": {"x": [[2**70]]}}]), 422),
        ("/runs", run([{"transformer": "fuse", "params": {"x": [[-inf]]}}]), 422),
        ("/templates", {"name": "t", "pipeline": {"steps": [
            {"transformer": "fuse", "timeout_s": inf}]}}, 422),
        ("/templates", {"name": "t", "pipeline": {"steps": ["fuse"] * 100}}, 400),
        ("/devices", {"name": "dev", "arch": "cortex-m4", "clock_mhz": inf, "ram_kb": 1,
                      "flash_kb": 1}, 422),
        ("/devices", {"name": "dev", "arch": "cortex-m4", "clock_mhz": 80, "ram_kb": 2**62,
                      "flash_kb": 1}, 422),
        ("/devices", {"name": "dev", "arch": "cortex-m4", "clock_mhz": 80, "ram_kb": 1,
                      "flash_kb": 1, "macs_per_cycle": nan}, 422),
        ("/datasets/builtin", {"seed": 2**40}, 422),
        ("/datasets/builtin", {"seed": -1}, 422),
        ("/datasets/builtin", {"test_fraction": nan}, 422),
        ("/datasets/builtin", {"calibration_size": 10**9}, 422),
        ("/datasets/hub", {"repo_id": "a/b", "filename": "d.npz", "image_size": [1, 10**9]},
         422),
        ("/models/hub", {"repo_id": "a/b", "filename": "m.onnx", "input_shape": [10**12]},
         422),
        ("/runs", run([{"transformer": "fuse", "params": {"x": "DEEP"}}]), {400, 422}),
        ("/runs", run([{"transformer": "fuse", "params": {"x": "DEEPER"}}]), {400, 422}),
    ]
    with http(server, mallory) as raw:
        for path, body, status in posts:
            content = _json(body).replace(b'"DEEPER"', b"[" * 900 + b"]" * 900).replace(
                b'"DEEP"', b"[" * 50_000 + b"]" * 50_000)
            answer = raw.post(f"{API}{path}", content=content,
                              headers={"Content-Type": "application/json"})
            assert_refused(answer, status)
        queries: list[tuple[str, dict[str, str]]] = [
            ("/datasets", {"filename": "x.csv", "seed": str(2**40)}),
            ("/datasets", {"filename": "x.csv", "test_fraction": "nan"}),
            ("/datasets", {"filename": "x.csv", "test_fraction": "inf"}),
            ("/datasets", {"filename": "x.csv", "calibration_size": "1e9"}),
            ("/datasets", {"filename": "x.csv", "image_width": "100000"}),
            ("/models", {"filename": "m.pt", "input_shape": str(10**12)}),
            ("/models", {"filename": "m.pt", "input_shape": "-1"}),
        ]
        for path, params in queries:
            answer = raw.post(f"{API}{path}", params=params, content=b"a,label\n1,0\n")
            assert_refused(answer, 422, "validation_error")
        run_id = "does-not-matter"
        log = raw.get(f"{API}/runs/{run_id}/steps/{10**30}/log")
        assert_refused(log, 422, "validation_error")
        assert raw.get(f"{API}/runs").json() == []
        assert [t["name"] for t in raw.get(f"{API}/templates").json()] == templates
        assert [d["name"] for d in raw.get(f"{API}/devices").json()] == devices
        assert [d["name"] for d in raw.get(f"{API}/datasets").json()] == ["d"]
        assert [m["name"] for m in raw.get(f"{API}/models").json()] == ["m"]
    stored()


# 4. uploads -------------------------------------------------------------------------------


def test_truncated_and_odd_multipart_bodies(server: Server, mallory: Client,
                                            stored: Callable[[], None]) -> None:
    csv = b"a,b,label\n" + b"".join(b"%d,%d,%d\n" % (i, i + 1, i % 2) for i in range(200))

    def post(raw: httpx.Client, boundary: str, body: bytes) -> httpx.Response:
        return raw.post(f"{API}/datasets", content=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"})

    with http(server, mallory) as raw:
        truncated = post(raw, "b0undary", multipart("b0undary", "d.csv", csv[:-400],
                                                    close=False))
        body = assert_refused(truncated, 400, "invalid_input")
        assert body["message"] == ("the multipart body ended before its closing boundary; "
                                   "nothing was stored")
        for length in (71, 257, 300, 5000):
            boundary = "b" * length
            answer = post(raw, boundary, multipart(boundary, "d.csv", csv))
            assert "boundary" in assert_refused(answer, 400, "invalid_input")["message"]
        garbage = post(raw, "xyz", b"--xyz\r\nno headers at all\r\n\x00\x01" * 50)
        assert_refused(garbage, 400, "invalid_input")
        assert raw.get(f"{API}/datasets").json() == []
        boundary = "a" * 70  # the most RFC 2046 allows
        accepted = post(raw, boundary, multipart(boundary, "fine.csv", csv))
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["num_samples"] == 200
    stored()
    assert _leftover_uploads(server) == []


def test_a_crashed_servers_upload_files_are_swept(make_server: Callable[..., Server]) -> None:
    server = make_server()
    mallory = server.user("mallory@example.com")
    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield b"a,label\n" + b"1,0\n" * 50_000
        release.wait(60)
        yield b"1,0\n"

    outcome: list[object] = []

    def upload() -> None:
        with http(server, mallory) as raw:
            try:
                outcome.append(raw.post(f"{API}/datasets", params={"filename": "slow.csv"},
                                        content=body()))
            except httpx.HTTPError as exc:
                outcome.append(exc)

    sender = threading.Thread(target=upload)
    sender.start()
    wait_for(lambda: bool(_leftover_uploads(server)), 30)
    server.kill()  # mid-upload: the temp file is left behind
    release.set()
    sender.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.HTTPError), outcome
    left = _leftover_uploads(server)
    assert left
    fresh = server.home / "uploads" / ".upload-live.part"
    fresh.write_bytes(b"another server's upload in progress")
    hour_ago = time.time() - 2 * 3600
    for path in left:
        os.utime(path, (hour_ago, hour_ago))
    server.start()
    assert _leftover_uploads(server) == [fresh]
    assert mallory.list_datasets() == []


# 5. shared content ------------------------------------------------------------------------


def test_shared_content_tells_nothing_about_other_users(server: Server, alice: Client,
                                                        mallory: Client, tiny_onnx: Path,
                                                        tmp_path: Path) -> None:
    data = npz_bytes(X=np.random.default_rng(1).random((30, 64)), y=np.arange(30) % 10)
    with http(server, alice) as raw:
        model = raw.post(f"{API}/models", params={"filename": "secret-plan.onnx",
                                                  "name": "alice-secret-model"},
                         content=tiny_onnx.read_bytes())
        assert model.status_code == 201
        dataset = raw.post(f"{API}/datasets", params={"filename": "secret.npz",
                                                      "name": "alice-secret-data"},
                           content=data)
        assert dataset.status_code == 201
    time.sleep(2.5)  # so that a leaked creation time would differ from mallory's

    other = npz_bytes(X=np.random.default_rng(2).random((30, 64)), y=np.arange(30) % 10)
    with http(server, mallory) as raw:
        since = datetime.now().astimezone() - timedelta(seconds=1)  # stored times may be
        # rounded to the second
        mine = raw.post(f"{API}/models", params={"filename": "m.onnx", "name": "m-model"},
                        content=tiny_onnx.read_bytes())
        known = raw.post(f"{API}/datasets", params={"filename": "d.npz", "name": "m-data"},
                         content=data)
        unknown = raw.post(f"{API}/datasets", params={"filename": "e.npz", "name": "m-other"},
                           content=other)
        assert mine.status_code == known.status_code == unknown.status_code == 201
        # The same answer whether or not someone else stored the content first.
        assert set(known.json()) == set(unknown.json())
        assert set(known.headers) == set(unknown.headers)
        for answer in (mine, known, unknown):
            assert "alice" not in answer.text and "secret" not in answer.text
            assert datetime.fromisoformat(answer.json()["created_at"]) >= since

        for path, name in ((f"/models/{mine.json()['id']}/file", "m-model.onnx"),
                           (f"/datasets/{known.json()['id']}/file", "m-data.npz")):
            download = raw.get(f"{API}{path}")
            assert download.status_code == 200
            assert download.headers["content-disposition"] == f'attachment; filename="{name}"'

        created = raw.post(f"{API}/runs", json={"model": "m-model", "dataset": "m-data",
                                                "name": "m-run",
                                                "pipeline": {"steps": ["fuse"],
                                                             "evaluate": False}})
        assert created.status_code == 201, created.text
        run = finished(mallory, created.json()["id"])
        assert run.status == "succeeded", run.error
        artifacts = raw.get(f"{API}/runs/{run.id}/artifacts")
        assert artifacts.status_code == 200
        assert "alice" not in artifacts.text and "secret" not in artifacts.text
        names = {a["sha256"]: a["filename"] for a in artifacts.json()}
        assert names[mine.json()["artifact_sha"]] == "m-model.onnx"
        for item in artifacts.json():
            assert datetime.fromisoformat(item["created_at"]) >= since
            download = raw.get(f"{API}/runs/{run.id}/artifacts/{item['sha256']}")
            assert download.status_code == 200
            assert "alice" not in download.headers["content-disposition"]
            assert "secret" not in download.headers["content-disposition"]
        output = raw.get(f"{API}/runs/{run.id}/output")
        assert output.status_code == 200 and "secret" not in output.headers[
            "content-disposition"]
        export = raw.get(f"{API}/runs/{run.id}/export")
        assert export.status_code == 200
        with zipfile.ZipFile(io.BytesIO(export.content)) as zf:
            assert not [n for n in zf.namelist() if "secret" in n or "alice" in n]
            lineage = json.loads(zf.read("lineage.json"))
        assert "secret" not in json.dumps(lineage) and "alice" not in json.dumps(lineage)
        assert all(datetime.fromisoformat(a["created_at"]) >= since for a in lineage)
        assert {a["filename"] for a in lineage} >= {"m-model.onnx"}
