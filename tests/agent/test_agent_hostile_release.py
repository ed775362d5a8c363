"""A hostile server (one that holds the release key) or a man in the middle against the
agent: path-like file names in a signed manifest, a golden NPZ carrying a pickle, and a
package that names a module outside its slot; links to another host and downloads longer
than the manifest says."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from agent_support import DEVICE, TENANT, make_release
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinymlaas.agent.ddi import DdiClient
from tinymlaas.agent.health import check_python
from tinymlaas.agent.verify import verify_release
from tinymlaas.contracts.ota import HealthSpec, ReleaseFile, sign_document
from tinymlaas.errors import InvalidInputError, UnsafeInputError


@pytest.mark.parametrize("name", ["../../agent.json", "/etc/passwd", "a/b.whl", "..",
                                  ".hidden", "x\\..\\y", "x" * 129])
def test_agent_refuses_a_signed_manifest_with_a_path_like_file_name(
        release_key: Ed25519PrivateKey, package: tuple[Path, Path], name: str) -> None:
    release = make_release(release_key, *package, version=2)
    document = release.document.model_dump(mode="json")
    document["files"][1]["name"] = name  # the golden file, signed by the key itself
    manifest = json.dumps(sign_document(document, release_key)).encode()
    with pytest.raises(InvalidInputError, match="malformed"):
        verify_release(manifest, release.ticket, release_key.public_key(), tenant=TENANT,
                       controller_id=DEVICE, action_id="act-1", device_profile=None,
                       floor_version=0)
    with pytest.raises(ValueError):
        ReleaseFile(name=name, sha256="0" * 64, size=1, kind="file")


class _Payload:
    """Pickled into an object array; unpickling it would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _content(tmp_path: Path, package: str, body: str) -> Path:
    content = tmp_path / "slot" / "content"
    (content / package).mkdir(parents=True)
    (content / package / "__init__.py").write_text(body)
    return content


def test_agent_health_check_never_unpickles_a_golden_file(
        tmp_path: Path, package: tuple[Path, Path]) -> None:
    marker = tmp_path / "pwned"
    golden = tmp_path / "golden.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    np.savez(golden, **{"input/x": evil, "output/0": evil})
    content = _content(tmp_path, "model_pkg",
                       "def predict(data):\n    return [data['x']]\n")
    result = check_python(content, "model_pkg", golden, HealthSpec(golden="golden.npz"),
                          timeout_s=60)
    assert not result.ok and "allow_pickle" in result.detail, result.detail
    assert not marker.exists(), "the pickle in the golden file ran"


def test_agent_health_check_refuses_a_module_from_outside_the_slot(
        tmp_path: Path, package: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # a package named like a module the probe has already loaded (json) gets that one,
    # not the slot's: refused, and the slot's predict is never called
    marker = tmp_path / "called"
    content = _content(tmp_path, "json", f"def predict(data):\n    open({str(marker)!r}, "
                                         "'w').close()\n    return []\n")
    result = check_python(content, "json", package[1], HealthSpec(golden="golden.npz"),
                          timeout_s=60)
    assert not result.ok and "not from the slot" in result.detail, result.detail
    assert not marker.exists()
    # the environment cannot put a folder outside the slot on the path
    elsewhere = tmp_path / "elsewhere" / "model_pkg"
    elsewhere.mkdir(parents=True)
    (elsewhere / "__init__.py").write_text("def predict(data):\n    return []\n")
    monkeypatch.setenv("PYTHONPATH", str(elsewhere.parent))
    missing = check_python(content, "model_pkg", package[1], HealthSpec(), timeout_s=60)
    assert not missing.ok and "cannot import model_pkg" in missing.detail, missing.detail


class _Recorder(BaseHTTPRequestHandler):
    """Answers every GET with ``body`` and records the path and Authorization header."""

    body = b""
    seen: list[tuple[str, str | None]]

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: object) -> None:
        return


def _serve(body: bytes) -> tuple[ThreadingHTTPServer, list[tuple[str, str | None]]]:
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (_Recorder,), {"body": body, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_agent_sends_its_credential_only_to_its_server_and_takes_no_extra_bytes(
        tmp_path: Path) -> None:
    data = b"x" * 1000
    home, home_seen = _serve(data + b"and more the manifest never listed")
    evil, evil_seen = _serve(data)
    try:
        client = DdiClient(f"http://127.0.0.1:{home.server_port}", TENANT, DEVICE, "secret")
        # a link to another host is fetched from the enrolled server, by its path
        with client, pytest.raises(UnsafeInputError, match="more than the 1000 bytes"):
            client.download(f"http://127.0.0.1:{evil.server_port}/steal/file.bin",
                            tmp_path / "file.bin", size=len(data),
                            sha256=hashlib.sha256(data).hexdigest())
    finally:
        home.shutdown()
        evil.shutdown()
    assert evil_seen == []
    assert home_seen == [("/steal/file.bin", "TargetToken secret")]
    assert not (tmp_path / "file.bin").exists()
    assert not (tmp_path / "file.bin.part").exists()
