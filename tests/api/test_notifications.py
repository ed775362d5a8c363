"""Emails to a real SMTP server (aiosmtpd) and signed webhooks to a real HTTP server when
runs finish."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from api_support import FAST, make_settings, new_user
from fastapi.testclient import TestClient

from tinymlaas.errors import InvalidInputError
from tinymlaas.notify import SIGNATURE_HEADER, deliver_webhook
from tinymlaas.notify.webhooks import check_webhook_url
from tinymlaas.server import create_app, open_studio


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    with socket.socket() as probe:  # a free port (the controller checks it by connecting)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


class Receiver:
    """Records webhook deliveries (headers and exact body bytes)."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.deliveries.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    threading.Thread(target=r.server.serve_forever, daemon=True).start()
    yield r
    r.server.shutdown()


def _wait(condition, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "no notification arrived"
        time.sleep(0.05)


def test_email_and_webhook_on_success_and_failure(tmp_path: Path, database_url: str,
                                                   inbox, receiver: Receiver,
                                                   tiny_onnx: Path) -> None:
    handler, port = inbox
    studio = open_studio(make_settings(tmp_path / "home", database_url, smtp_host="127.0.0.1",
                                       smtp_port=port, smtp_from="studio@example.com"))
    try:
        with TestClient(create_app(studio=studio)) as http:
            alice = new_user(http, "alice@example.com")
            new_user(http, "bob@example.com")
            alice.share_project(alice.me().default_project, "bob@example.com", "viewer")
            hook = alice.create_webhook(receiver.url, secret="s3cret-s3cret")
            assert hook.secret == "s3cret-s3cret"
            model = alice.upload_model(tiny_onnx)
            data = alice.add_builtin_dataset()

            ok = alice.follow(alice.create_run(model.id, data.id, pipeline=FAST,
                                               name="good").id)
            assert ok.status == "succeeded"
            _wait(lambda: len(handler.messages) == 1 and len(receiver.deliveries) == 1)
            recipients, raw = handler.messages[0]
            assert sorted(recipients) == ["alice@example.com", "bob@example.com"]
            email = message_from_bytes(raw)
            assert email["Subject"] == "[tinymlaas] run good succeeded"
            assert email["From"] == "studio@example.com"
            assert ok.id in email.get_payload()

            headers, body = receiver.deliveries[0]
            expected = hmac.new(b"s3cret-s3cret", body, hashlib.sha256).hexdigest()
            assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
            assert headers["X-Tinymlaas-Event"] == "run.succeeded"
            payload = json.loads(body)
            assert (payload["event"], payload["run"]["id"]) == ("run.succeeded", ok.id)

            alice.register_transformer("broken", command=["false"])
            bad = alice.follow(alice.create_run(model.id, data.id, name="bad", pipeline={
                "steps": ["broken"], "evaluate": False}).id)
            assert bad.status == "failed"
            _wait(lambda: len(handler.messages) == 2 and len(receiver.deliveries) == 2)
            email = message_from_bytes(handler.messages[1][1])
            assert email["Subject"] == "[tinymlaas] run bad failed"
            assert "external command exited with 1" in email.get_payload()
            headers, body = receiver.deliveries[1]
            assert headers["X-Tinymlaas-Event"] == "run.failed"
            assert hmac.compare_digest(
                headers[SIGNATURE_HEADER],
                "sha256=" + hmac.new(b"s3cret-s3cret", body, hashlib.sha256).hexdigest())
    finally:
        studio.runs.shutdown(wait=True)
        studio.services.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/hook",
                                 "http://169.254.169.254/latest/meta-data",
                                 "http://10.0.0.7/hook", "http://[::1]/hook", "ftp://x/hook"])
def test_webhooks_to_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidInputError):
        check_webhook_url(url, allow_private=False)


def test_webhook_url_checks_allow_public_and_configured_private() -> None:
    check_webhook_url("https://93.184.216.34/hook", allow_private=False)
    check_webhook_url("http://127.0.0.1:8080/hook", allow_private=True)
    with pytest.raises(InvalidInputError, match=r"internal address 127\.0\.0\.1"):
        deliver_webhook("http://127.0.0.1:9/hook", "secret", "run.succeeded", {})
