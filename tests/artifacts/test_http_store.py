"""The HTTP artifact store against a real server: signed blob URLs (Range, sha256 checked
on both ends, bounded uploads, tampered and expired URLs refused) and downloads that
resume after the connection is cut mid-stream or a part was left on disk."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tinymlaas.api.testing import LiveServer, serve_in_thread
from tinymlaas.artifacts import ArtifactStore, LocalArtifactStore
from tinymlaas.artifacts.http import HttpArtifactStore
from tinymlaas.config import Settings
from tinymlaas.errors import ForbiddenError, InvalidInputError
from tinymlaas.server import create_app, open_studio
from tinymlaas.service.blobs import BlobSigner
from tinymlaas.store import MetadataStore
from tinymlaas.store.attempts import AttemptStore

SIZE = 3 * 1024 * 1024 + 123


class Server:
    def __init__(self, live: LiveServer, home: Path, store: LocalArtifactStore,
                 meta: MetadataStore) -> None:
        self.url = live.url
        self.signer = BlobSigner.for_home(home)
        self.store = store
        self.home = home
        self.meta = meta

    def url_for(self, sha: str, method: str) -> str:
        return self.signer.sign(sha, method, base_url=self.url)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "server-home"
    studio = open_studio(Settings(home=home, max_upload_bytes=8 * 1024 * 1024))
    try:
        with serve_in_thread(create_app(studio=studio)) as live:
            yield Server(live, home, studio.services.artifacts, studio.services.meta)
    finally:
        studio.runs.shutdown(wait=True)
        studio.services.close()


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(SIZE))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


class CuttingProxy:
    """A TCP proxy to the server that closes the first ``cuts`` connections after
    ``cut_after`` bytes of response, and keeps each connection's request head."""

    def __init__(self, upstream: str, cut_after: int, cuts: int = 1) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.cut_after, self.cuts = cut_after, cuts
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            cut = self.cut_after if self.cuts > 0 else None
            self.cuts -= 1
            threading.Thread(target=self._serve, args=(client, cut), daemon=True).start()

    def _serve(self, client: socket.socket, cut: int | None) -> None:
        upstream = socket.create_connection(self.upstream)
        head = client.recv(65536)
        self.requests.append(head)
        upstream.sendall(head)

        def forward() -> None:  # the rest of the request (an upload's body)
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=forward, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                if cut is not None and sent + len(data) > cut:
                    client.sendall(data[:cut - sent])
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def ranges(self) -> list[str | None]:
        found = []
        for head in self.requests:
            lines = head.decode("latin-1").split("\r\n")
            found.append(next((line.split(":", 1)[1].strip() for line in lines
                               if line.lower().startswith("range:")), None))
        return found

    def close(self) -> None:
        self.listener.close()


def test_both_stores_are_artifact_stores(server: Server) -> None:
    assert isinstance(server.store, ArtifactStore)
    with HttpArtifactStore(server.url_for) as remote:
        assert isinstance(remote, ArtifactStore)


def test_upload_download_round_trip(server: Server, blob: tuple[Path, str],
                                    tmp_path: Path) -> None:
    path, sha = blob
    with HttpArtifactStore(server.url_for) as remote:
        assert not remote.exists(sha)
        assert remote.put_file(path) == (sha, SIZE)
        assert remote.exists(sha)
        assert server.store.path(sha).read_bytes() == path.read_bytes()
        assert remote.put_file(path) == (sha, SIZE)  # already there: nothing sent
        got = remote.get_file(sha, tmp_path / "out" / "copy.bin")
    assert got.read_bytes() == path.read_bytes()
    assert [p.name for p in got.parent.iterdir()] == ["copy.bin"]


def test_get_answers_ranges(server: Server, blob: tuple[Path, str]) -> None:
    path, sha = blob
    server.store.put_file(path)
    url = server.url_for(sha, "GET")
    whole = httpx.get(url)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    assert hashlib.sha256(whole.content).hexdigest() == sha
    part = httpx.get(url, headers={"Range": "bytes=1000-"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-{SIZE - 1}/{SIZE}"
    assert part.content == path.read_bytes()[1000:]
    past = httpx.get(url, headers={"Range": f"bytes={SIZE}-"})
    assert past.status_code == 416


def test_tampered_expired_and_wrong_method_urls_are_403(server: Server,
                                                        blob: tuple[Path, str]) -> None:
    path, sha = blob
    server.store.put_file(path)
    good = server.url_for(sha, "GET")
    assert httpx.get(good).status_code == 200
    tampered = good[:-1] + ("0" if good[-1] != "0" else "1")
    expired = server.signer.sign(sha, "GET", ttl_s=10, base_url=server.url,
                                 now=time.time() - 60)
    other_blob = good.replace(sha, "0" * 64)
    later = good.replace("expires=", "expires=9")
    for url in (tampered, expired, other_blob, later):
        response = httpx.get(url)
        assert response.status_code == 403, url
        assert set(response.json()) == {"code", "message", "details"}
    assert "expired" in httpx.get(expired).json()["message"]
    as_put = httpx.put(good, content=path.read_bytes())
    assert as_put.status_code == 403
    with pytest.raises(ForbiddenError):
        BlobSigner(b"another key").verify(sha, "GET", int(time.time()) + 60,
                                          good.rsplit("sig=", 1)[1])


def test_an_upload_must_hash_to_its_address(server: Server, blob: tuple[Path, str]) -> None:
    path, sha = blob
    wrong = "1" * 64
    response = httpx.put(server.url_for(wrong, "PUT"), content=path.read_bytes())
    assert response.status_code == 400
    assert response.json()["details"] == {"expected": wrong, "received": sha}
    assert not server.store.exists(wrong) and not server.store.exists(sha)
    assert not [p for p in server.store.root.iterdir() if p.name.startswith(".incoming")]


def test_uploads_are_bounded_even_without_a_length(server: Server, tmp_path: Path) -> None:
    big = os.urandom(9 * 1024 * 1024)
    sha = hashlib.sha256(big).hexdigest()
    declared = httpx.put(server.url_for(sha, "PUT"), content=big)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 1 << 20):
            yield big[start:start + (1 << 20)]

    streamed = httpx.put(server.url_for(sha, "PUT"), content=chunks())
    assert streamed.status_code == 413
    assert not server.store.exists(sha)
    assert not [p for p in server.store.root.iterdir() if p.name.startswith(".incoming")]


def test_a_download_cut_mid_stream_resumes_with_range(server: Server, blob: tuple[Path, str],
                                                      tmp_path: Path) -> None:
    path, sha = blob
    server.store.put_file(path)
    proxy = CuttingProxy(server.url, cut_after=SIZE // 3, cuts=2)
    try:
        def through_proxy(digest: str, method: str) -> str:
            return server.signer.sign(digest, method, base_url=proxy.url)

        with HttpArtifactStore(through_proxy) as remote:
            got = remote.get_file(sha, tmp_path / "copy.bin")
    finally:
        proxy.close()
    assert hashlib.sha256(got.read_bytes()).hexdigest() == sha
    ranges = proxy.ranges()
    assert len(ranges) == 3 and ranges[0] is None
    offsets = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:]]
    # each try starts where the last one broke off (less the response's head)
    assert 0 < offsets[0] < offsets[1] < SIZE
    assert offsets[1] - offsets[0] <= SIZE // 3


def test_a_part_left_on_disk_is_resumed_and_checked(server: Server, blob: tuple[Path, str],
                                                    tmp_path: Path) -> None:
    path, sha = blob
    server.store.put_file(path)
    target = tmp_path / "copy.bin"
    part = target.with_name(f".{target.name}.{sha[:16]}.part")
    part.write_bytes(path.read_bytes()[:SIZE // 2])
    proxy = CuttingProxy(server.url, cut_after=10**12, cuts=0)
    try:
        with HttpArtifactStore(lambda d, m: server.signer.sign(d, m, base_url=proxy.url)) \
                as remote:
            remote.get_file(sha, target)
    finally:
        proxy.close()
    assert proxy.ranges() == [f"bytes={SIZE // 2}-"]
    assert target.read_bytes() == path.read_bytes() and not part.exists()
    # a part with wrong bytes: the result fails its sha256 and is discarded
    target.unlink()
    part.write_bytes(os.urandom(SIZE // 2))
    with HttpArtifactStore(server.url_for) as remote:
        with pytest.raises(InvalidInputError, match="sha256"):
            remote.get_file(sha, target)
        assert not target.exists() and not part.exists()
        remote.get_file(sha, target)  # starts over
    assert target.read_bytes() == path.read_bytes()


def test_the_client_checks_what_it_received(server: Server, blob: tuple[Path, str],
                                            tmp_path: Path) -> None:
    path, sha = blob
    server.store.put_file(path)
    other = tmp_path / "other.bin"
    other.write_bytes(b"something else")
    other_sha = server.store.put_file(other)[0]
    with HttpArtifactStore(server.url_for) as remote, \
            pytest.raises(InvalidInputError, match="sha256"):
        remote.get_file(sha, tmp_path / "copy.bin", url=server.url_for(other_sha, "GET"))
    assert not (tmp_path / "copy.bin").exists()


def test_the_blob_key_is_private_and_made_once(server: Server, blob: tuple[Path, str]) -> None:
    key = server.home / "blob-url.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_text()
    assert BlobSigner.for_home(server.home).sign("a" * 64, now=0) == \
        server.signer.sign("a" * 64, now=0)
    assert key.read_text() == first and len(bytes.fromhex(first)) == 32


HEAVY = ("sqlalchemy", "fastapi", "starlette", "onnx", "torch", "onnxruntime", "alembic")
BLOCKER = f"""
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(HEAVY)!r}:
            raise ModuleNotFoundError(f"{{name}} is blocked", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def test_a_site_worker_moves_blobs_with_the_sdk_alone(server: Server, blob: tuple[Path, str],
                                                      tmp_path: Path) -> None:
    """In a Python where the server stack cannot be imported: the site's token gets an
    upload URL for the output of the job its worker holds, the output goes up (checked by
    the server), an input comes down by the URL a job would carry."""
    import subprocess
    import sys

    from tinymlaas.client import Client

    path, sha = blob
    with Client(server.url) as user:
        user.register("site-admin@example.com", "correct horse battery", "admin")
        user.login("site-admin@example.com", "correct horse battery")
        site = user.create_site("factory")
    token = site.token
    attempts = AttemptStore(server.meta)
    attempts.queue("run-a-0-abc", "run-a", site.id, site.project, {"job_id": "run-a-0-abc"}, 3)
    assert attempts.claim("run-a-0-abc", site.id, "w-1", 600) is not None
    given = tmp_path / "input.bin"
    given.write_bytes(os.urandom(1000))
    input_sha = server.store.put_file(given)[0]
    input_url = server.url_for(input_sha, "GET")
    code = BLOCKER + f"""
from pathlib import Path
from tinymlaas.artifacts.http import HttpArtifactStore
from tinymlaas.client import Client
from tinymlaas.contracts.jobs import ArtifactRef
site = Client({server.url!r}, {token!r})
site.site_heartbeat("factory", "w-1", "plant-pc", [])
store = HttpArtifactStore(
    lambda sha, method: site.blob_upload_url("factory", sha, job_id="run-a-0-abc",
                                             attempt=1, worker_id="w-1").url,
    ask_before_upload=False)
print(store.put_file(Path({str(path)!r}))[0])
ref = ArtifactRef(sha256={input_sha!r}, kind="file", url={input_url!r})
print(store.get_ref(ref, Path({str(tmp_path / "got.bin")!r})).stat().st_size)
print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [sha, "1000", "[]"]
    assert server.store.path(sha).read_bytes() == path.read_bytes()
    assert (tmp_path / "got.bin").read_bytes() == given.read_bytes()
