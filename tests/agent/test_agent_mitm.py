"""A server (or a man in the middle) that serves device A the ticket of device B, and
rewrites the unsigned DDI metadata to match: the ticket's signature is good, but it names
another device, so A refuses, says why to the server, and installs nothing."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from agent_e2e import Studio, agent, current_release, enroll, summary


class _Proxy(BaseHTTPRequestHandler):
    upstream = ""
    ticket = b""

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def _forward(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in ("authorization", "content-type", "range")}
        if method == "GET" and self.path.endswith("/ticket.json"):
            status, data, extra = 200, self.ticket, {}
        else:
            answer = httpx.request(method, self.upstream + self.path, headers=headers,
                                   content=body)
            status, data = answer.status_code, answer.content
            extra = {k: v for k, v in answer.headers.items() if k.lower() == "content-range"}
            if method == "GET" and "/deploymentBase/" in self.path and status == 200:
                document = json.loads(data)
                for artifact in document["deployment"]["chunks"][0]["artifacts"]:
                    if artifact["filename"] == "ticket.json":
                        artifact["hashes"] = {"sha256": hashlib.sha256(self.ticket).hexdigest()}
                        artifact["size"] = len(self.ticket)
                data = json.dumps(document).encode()
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def proxy(studio: Studio) -> Iterator[tuple[str, type[_Proxy]]]:
    handler = type("Proxy", (_Proxy,), {"upstream": studio.url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_agent_refuses_a_ticket_signed_for_another_device(
        studio: Studio, tmp_path: Path, proxy: tuple[str, type[_Proxy]]) -> None:
    url, handler = proxy
    device_a, code_a = enroll(studio, "door-a", "e2e-mitm")
    device_b, code_b = enroll(studio, "door-b", "e2e-mitm")
    release = studio.client.create_release(studio.run_id)
    rollout = studio.client.deploy("e2e-mitm", release=release.id)

    # device B's own, genuinely signed ticket for the same release
    enrolled = httpx.post(f"{studio.url}/ddi/enroll", json={"code": code_b}).json()
    b_auth = {"Authorization": f"TargetToken {enrolled['token']}"}
    base = httpx.get(f"{studio.url}/ddi/{enrolled['tenant']}/controller/v1/{device_b}",
                     headers=b_auth).json()
    deployment = httpx.get(base["_links"]["deploymentBase"]["href"], headers=b_auth).json()
    ticket = next(a for a in deployment["deployment"]["chunks"][0]["artifacts"]
                  if a["filename"] == "ticket.json")
    handler.ticket = httpx.get(ticket["_links"]["download-http"]["href"], headers=b_auth).content
    assert json.loads(handler.ticket)["signed"]["controller_id"] == device_b

    root = tmp_path / "agent"
    done = agent(root, server=url, code=code_a)
    assert done.returncode == 0, done.stderr
    result = summary(done)
    assert result["outcome"] == "refused", result
    assert f"the ticket is for device '{device_b}'" in result["details"][0]
    assert current_release(root) == (None, None)
    action = next(a for a in studio.client.rollout(rollout.id).actions
                  if a.device_id == device_a)
    assert (action.state.value, action.stage) == ("failed", "refused")
    assert device_b in action.message
    assert studio.client.fleet_device(device_a).version is None
