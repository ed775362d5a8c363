"""Request bodies the server reads into memory (JSON, forms) are bounded: a hostile client
sending hundreds of MiB (chunked, or announcing it) gets a 413 once the limit is passed, and
the server's memory does not grow with the body. Streaming uploads keep their own limits."""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from api_support import API, PASSWORD, assert_error_shape, make_settings
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from tinymlaas.api.testing import free_port, server_workers, start_server, stop_server
from tinymlaas.client import Client
from tinymlaas.server import LARGE_BODIES, create_app, open_studio

MiB = 1024**2
_CHUNK = 16 * 1024


@pytest.fixture
def small_limit_app(tmp_path: Path) -> Iterator[FastAPI]:
    settings = make_settings(tmp_path / "home", f"sqlite:///{tmp_path / 'meta.db'}",
                             max_body_bytes=64 * 1024)
    studio = open_studio(settings)
    try:
        yield create_app(studio=studio)
    finally:
        studio.runs.shutdown(wait=True)
        studio.services.close()


#: The bodies sent to every route: endless after their first bytes.
_BODIES = [(b"application/json", b""), (b"application/x-www-form-urlencoded", b""),
           (b"multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.npz"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n")]


async def _pull(app: FastAPI, method: str, path: str, content_type: bytes,
                start: bytes) -> tuple[int, int]:
    """Call the app with an endless body: the response status and the bytes it read."""
    pulled, status = 0, 0
    first = start + b" " * (_CHUNK - len(start))
    piece = b" " * _CHUNK

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled > 2000 * MiB:  # an unbounded route: stop it (the assertions fail it)
            return {"type": "http.disconnect"}
        body = first if pulled == 0 else piece
        pulled += len(body)
        return {"type": "http.request", "body": body, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
             "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"content-type", content_type),
                         (b"transfer-encoding", b"chunked")]}
    await asyncio.wait_for(app(scope, receive, send), 60)
    return status, pulled


def _routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    """Every (method, path template, endpoint) the app serves; mounts as ("GET", path, None)."""
    found = []
    for context in iter_route_contexts(app.routes):
        methods = context.methods or {"GET"}
        found += [(method, context.path, context.endpoint) for method in sorted(methods)]
    return found


def test_every_route_reads_at_most_its_limit(small_limit_app: FastAPI) -> None:
    """Each route of the app, added now or later, reads no more than max_body_bytes of a
    body (as JSON and as forms) unless it is one of LARGE_BODIES."""
    app, limit = small_limit_app, 64 * 1024
    refused, checked = set(), 0
    for method, template, endpoint in _routes(app):
        own = LARGE_BODIES.get(endpoint, (limit, None))
        if own is None:
            continue  # a streaming upload: its own limit (tests/api/test_uploads.py)
        path = re.sub(r"\{[^}]+\}", "x", template)
        if endpoint is None:
            path += "/x"  # a mount (the static files)
        for content_type, start in _BODIES:
            status, pulled = asyncio.run(_pull(app, method, path, content_type, start))
            checked += 1
            assert pulled <= own[0] + _CHUNK, (method, template, pulled)
            if pulled > own[0] and status != 413:
                # only a file going out reads on (listening for the client leaving); it
                # is cut off: the connection ends
                assert (method, status) == ("GET", 200), (method, template, status)
            elif pulled > own[0]:
                refused.add((method, template))
    assert checked > 200
    # the limit is what refused them: JSON routes, forms of the pages, device results
    assert {("POST", f"{API}/runs"), ("POST", f"{API}/searches"), ("POST", "/login"),
            ("POST", f"{API}/auth/login"), ("POST", "/register"),
            ("POST", "/ddi/{tenant}/controller/v1/{controller_id}/inference/{job_id}/result"),
            ("POST", f"{API}/fleet/devices/{{ref}}/inference/samples")} <= refused
    assert len(refused) > 40


def test_large_bodies_name_routes_of_the_app(small_limit_app: FastAPI) -> None:
    routes = {endpoint: (method, path) for method, path, endpoint in _routes(small_limit_app)}
    assert set(LARGE_BODIES) <= set(routes)
    uploads = {routes[endpoint] for endpoint, limit in LARGE_BODIES.items() if limit is None}
    assert uploads == {("POST", f"{API}/models"), ("POST", f"{API}/datasets"),
                       ("PUT", f"{API}/blobs/{{sha256}}"), ("POST", "/models"),
                       ("POST", "/datasets")}


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _hostile_post(port: int, path: str, headers: dict[str, str], total: int,
                  declared: int | None = None) -> tuple[int, dict[str, str], bytes, int]:
    """POST ``total`` bytes in 1 MiB pieces, chunked or under a ``Content-Length`` of
    ``declared``, stopping when the server answers or hangs up. The status, headers and body
    of the answer, and the bytes sent."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(60)
    answer = bytearray()

    def read() -> None:
        try:
            while data := sock.recv(65536):
                answer.extend(data)
        except OSError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    framing = ("Transfer-Encoding: chunked" if declared is None
               else f"Content-Length: {declared}")
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{framing}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n")
    piece = b" " * MiB
    if declared is None:
        piece = f"{MiB:x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    try:
        sock.sendall(head.encode())
        while sent < total and not answer:
            sock.sendall(piece)
            sent += MiB
        if declared is None and not answer:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server hung up
    reader.join(timeout=60)
    sock.close()
    raw_head, _, body = bytes(answer).partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    answer_headers = {name.lower(): value.strip() for name, _, value in
                      (line.partition(":") for line in lines[1:])}
    return status, answer_headers, body, sent


def test_hostile_bodies_against_a_real_server(tmp_path: Path, tiny_onnx: Path) -> None:
    port = free_port()
    env = {**os.environ, "TINYMLAAS_HOME": str(tmp_path / "home"),
           "TINYMLAAS_DATABASE_URL": f"sqlite:///{tmp_path / 'meta.db'}",
           "TINYMLAAS_MAX_BODY_BYTES": str(MiB)}
    server = start_server(env, port)
    url = f"http://127.0.0.1:{port}"
    try:
        with Client(url) as alice:
            alice.register("alice@example.com", PASSWORD, "alice")
            alice.login("alice@example.com", PASSWORD)
            model = alice.upload_model(tiny_onnx)
            auth = {"Authorization": f"Bearer {alice.token}",
                    "Content-Type": "application/json"}
            # warm: the paths the attacks take have run once
            _hostile_post(port, f"{API}/runs", auth, 2 * MiB)
            _hostile_post(port, "/login", {"Content-Type":
                                           "application/x-www-form-urlencoded"}, 2 * MiB)
            [worker] = server_workers(server)  # the process that reads the bodies
            before = psutil.Process(worker).memory_info().rss
            Path(f"/proc/{worker}/clear_refs").write_text("5")  # peak := current
            total = 200 * MiB
            attacks = [(f"{API}/runs", auth, None), (f"{API}/runs", auth, total),
                       ("/login", {"Content-Type": "application/x-www-form-urlencoded"},
                        None)]
            for path, headers, declared in attacks:
                status, answer, body, sent = _hostile_post(port, path, headers, total,
                                                           declared)
                assert status == 413, (path, declared, body[:300])
                assert answer["connection"] == "close"
                assert sent < 50 * MiB  # the server stopped taking it early
                if path.startswith(API):
                    error = httpx.Response(413, content=body).json()
                    assert_error_shape(error, "payload_too_large")
                    assert error["details"] == {"limit_bytes": MiB,
                                                "setting": "TINYMLAAS_MAX_BODY_BYTES"}
                    assert "TINYMLAAS_MAX_BODY_BYTES" in error["message"]
                else:
                    assert answer["content-type"].startswith("text/html")
                    assert b"larger than the limit of 1048576 bytes" in body
            grown = _peak_rss(worker) - before
            after = psutil.Process(worker).memory_info().rss
            assert grown < 50 * MiB, (grown, after - before)
            # the server still answers, nothing stored is lost, and an upload larger than
            # the limit on bodies read into memory still goes through
            assert [m.id for m in alice.list_models()] == [model.id]
            rng = np.random.default_rng(0)
            buffer = io.BytesIO()
            np.savez(buffer, X=rng.random((8192, 1, 8, 8), dtype=np.float32),
                     y=rng.integers(0, 3, 8192))
            assert len(buffer.getvalue()) > 2 * MiB
            npz = tmp_path / "large.npz"
            npz.write_bytes(buffer.getvalue())
            dataset = alice.upload_dataset(npz)
            assert dataset.num_samples == 8192
            assert [d.id for d in alice.list_datasets()] == [dataset.id]
            # a JSON body under the limit is read as before
            response = httpx.post(f"{url}{API}/runs", headers=auth,
                                  json={"model": model.id, "dataset": dataset.id,
                                        "pipeline": {"steps": ["fuse"], "evaluate": False},
                                        "name": "x" * 100})
            assert response.status_code == 201, response.text
    finally:
        stop_server(server)


def test_the_spec_documents_the_413_of_every_body(small_limit_app: FastAPI) -> None:
    spec = small_limit_app.openapi()
    with_body = [(path, method, operation) for path, item in spec["paths"].items()
                 for method, operation in item.items() if "requestBody" in operation]
    assert len(with_body) > 30
    for path, method, operation in with_body:
        too_large = operation["responses"].get("413")
        assert too_large is not None, (method, path)
        assert too_large["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"}, (method, path)
    assert "ErrorBody" in spec["components"]["schemas"]
    runs = spec["paths"][f"{API}/runs"]
    assert "413" in runs["post"]["responses"] and "413" not in runs["get"]["responses"]
