"""Webhooks reach public addresses only (every IPv6 form that carries an IPv4 address
unwrapped, checked again at connect time against DNS rebinding) and are delivered from a
bounded queue of their own, so a slow receiver never holds up anybody's runs.

All traffic stays on 127.0.0.1: names resolve where a test says by patching
``socket.getaddrinfo`` in this process, and public addresses are only ever checked, never
connected to.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tinymlaas.api.deps import Studio
from tinymlaas.client import Client
from tinymlaas.config import Settings
from tinymlaas.errors import InvalidInputError, UnsafeInputError
from tinymlaas.notify import Attempt, Delivery, DeliveryQueue, Notifier, post_webhook
from tinymlaas.notify.notifier import webhook_delivery
from tinymlaas.notify.webhooks import check_webhook_url
from tinymlaas.server import create_app, open_studio

PASSWORD = "correct horse battery staple"
FAST = {"steps": ["fuse"], "evaluate": False}
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

#: Internal addresses (literal) and what the refusal must name: the embedded IPv4 address
#: for the forms that carry one, else the kind of address.
INTERNAL = [
    ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
    ("::ffff:a9fe:a9fe", "169.254.169.254"),  # IPv4-mapped cloud metadata
    ("::127.0.0.1", "127.0.0.1"),  # IPv4-compatible
    ("::ffff:0:7f00:1", "127.0.0.1"),  # IPv4-translated
    ("2002:7f00:1::", "127.0.0.1"),  # 6to4
    ("2002:a00:1::1", "10.0.0.1"),  # 6to4 of a private address
    ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
    ("64:ff9b:1::5db8:d822", "NAT64 local-use"),  # RFC 8215 local-use prefix
    ("2001:0:7f00:1::a247:27dd", "127.0.0.1"),  # Teredo, loopback server
    ("2001:0:5db8:d822::80ff:fffe", "127.0.0.1"),  # Teredo, loopback client (obfuscated)
    ("fec0::1", "site-local"),
    ("fc00::1", "unique local"),
    ("fd12:3456:789a::1", "unique local"),
    ("fe80::1", "link-local"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),  # global-scope multicast is still multicast
    ("2001:db8::1", "2001:db8::1"),  # documentation
    ("0.0.0.0", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "not globally routable"),  # shared address space (CGNAT)
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "240.0.0.1"),  # reserved
    ("255.255.255.255", "255.255.255.255"),
]


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.fixture
def resolve_to(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """``resolve_to("hooks.test", [addresses, ...])``: the name resolves to the first list
    at its first look-up, the next list at the next one (the last list from then on); other
    names resolve as usual. Returns the log of look-ups of that name."""
    real = socket.getaddrinfo

    def install(name: str, *answers: list[str]) -> list[str]:
        lookups: list[str] = []

        def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            if host != name:
                return real(host, port, *args, **kwargs)
            answer = answers[min(len(lookups), len(answers) - 1)]
            lookups.append(",".join(answer))
            port = int(port or 0)
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)) if ":" in a
                    else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in answer]

        monkeypatch.setattr(socket, "getaddrinfo", fake)
        return lookups

    return install


# the address check ------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "named"), INTERNAL)
def test_internal_literal_addresses_are_refused(address: str, named: str) -> None:
    with pytest.raises(UnsafeInputError) as refused:
        check_webhook_url(f"https://{_url_host(address)}:8443/hook", allow_private=False)
    assert named in refused.value.message
    assert "TINYMLAAS_WEBHOOK_ALLOW_PRIVATE" in refused.value.message


@pytest.mark.parametrize(("address", "named"), INTERNAL)
def test_names_resolving_to_internal_addresses_are_refused(
        resolve_to: Callable[..., list[str]], address: str, named: str) -> None:
    lookups = resolve_to("hooks.example.com", [address])
    with pytest.raises(UnsafeInputError) as refused:
        check_webhook_url("https://hooks.example.com/hook", allow_private=False)
    assert named in refused.value.message
    assert lookups == [address]


def test_a_name_with_one_internal_address_among_public_ones_is_refused(
        resolve_to: Callable[..., list[str]]) -> None:
    resolve_to("mixed.example.com", [PUBLIC_V4, PUBLIC_V6, "2002:7f00:1::"])
    with pytest.raises(UnsafeInputError, match=r"127\.0\.0\.1"):
        check_webhook_url("https://mixed.example.com/hook", allow_private=False)


@pytest.mark.parametrize("url", ["http://2130706433/hook", "http://127.1/hook",
                                 "http://0x7f.0.0.1/hook", "http://localhost:8080/hook"])
def test_other_spellings_of_loopback_are_refused(url: str) -> None:
    with pytest.raises(UnsafeInputError, match="loopback"):
        check_webhook_url(url, allow_private=False)


@pytest.mark.parametrize("url", [
    "https://user:secret@hooks.example.com/hook",  # user info
    f"http://{PUBLIC_V4}@127.0.0.1/hook",  # user info that looks like the host
    f"https://{PUBLIC_V4}:0/hook",  # port 0
    "ftp://hooks.example.com/hook", "file:///etc/passwd", "https:///hook", "not a url",
    "https://hooks.example.com/" + "x" * 3000,
])
def test_malformed_urls_are_refused_even_with_private_addresses_allowed(url: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(InvalidInputError):
            check_webhook_url(url, allow_private=allow_private)


def test_public_addresses_are_accepted(resolve_to: Callable[..., list[str]]) -> None:
    # Checked only: nothing connects to these addresses.
    check_webhook_url(f"https://{PUBLIC_V4}/hook", allow_private=False)
    check_webhook_url(f"https://[{PUBLIC_V6}]:8443/hook", allow_private=False)
    check_webhook_url("https://[2002:5db8:d822::1]/hook", allow_private=False)  # 6to4, public
    lookups = resolve_to("hooks.example.com", [PUBLIC_V4, PUBLIC_V6])
    check_webhook_url("https://hooks.example.com:8443/hook", allow_private=False)
    assert lookups == [f"{PUBLIC_V4},{PUBLIC_V6}"]
    check_webhook_url("http://127.0.0.1:8080/hook", allow_private=True)


# receivers on 127.0.0.1 -------------------------------------------------------------------


class Receiver:
    """An HTTP receiver on 127.0.0.1 answering ``statuses`` in turn (the last one from then
    on); with ``hold``, each request waits for ``release`` (at most ``hold_s``)."""

    def __init__(self, statuses: tuple[int, ...] = (204,), *, hold: bool = False,
                 hold_s: float = 20.0, headers: dict[str, str] | None = None) -> None:
        self.statuses = statuses
        self.release = threading.Event()
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.connections = 0
        self.started = 0
        self.finished = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    index = len(receiver.requests)
                    receiver.requests.append((time.monotonic(), dict(self.headers), body))
                    receiver.started += 1
                if hold:
                    receiver.release.wait(hold_s)
                with lock:  # counted before the answer, which may settle the delivery
                    receiver.finished += 1
                self.send_response(statuses[min(index, len(statuses) - 1)])
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                receiver.connections += 1
                return True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(*statuses: int, **options: Any) -> Receiver:
        receiver = Receiver(statuses or (204,), **options)
        threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.release.set()
        receiver.server.shutdown()
        receiver.server.server_close()


def _queue(**options: Any) -> DeliveryQueue:
    return DeliveryQueue(**{"max_pending": 100, "attempts": 4, "backoff_s": 0.05, **options})


def _hook(url: str, name: str = "hook", *, timeout_s: float = 5.0,
          allow_private: bool = True) -> Delivery:
    return webhook_delivery(name, url, "s3cret", "run.succeeded", b'{"event":"x"}',
                            timeout_s=timeout_s, allow_private=allow_private)


# DNS rebinding ----------------------------------------------------------------------------


def test_a_name_rebound_to_loopback_after_the_check_is_refused_at_connect_time(
        resolve_to: Callable[..., list[str]], receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    lookups = resolve_to("rebind.test", [PUBLIC_V4], ["127.0.0.1"])
    url = f"http://rebind.test:{receiver.port}/hook"
    check_webhook_url(url, allow_private=False)  # public when registered
    with pytest.raises(UnsafeInputError, match=r"internal address 127\.0\.0\.1 \(loopback\)"):
        post_webhook(url, "s3cret", "run.succeeded", b"{}", timeout_s=5, allow_private=False)
    assert lookups == [PUBLIC_V4, "127.0.0.1"]  # the delivery resolved again, itself
    assert receiver.connections == 0 and receiver.requests == []


def _settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"step_timeout_s": 120, "step_memory_mb": 4096,
                              "login_rate_limit": 50, **overrides}
    return Settings(home=tmp_path / "home", database_url=database_url, **values)


def _user(http: TestClient, email: str) -> Client:
    client = Client(http=http)
    client.register(email, PASSWORD, email.split("@")[0])
    client.login(email, PASSWORD)
    return client


def _notifier(studio: Studio) -> Notifier:
    notifier = studio.runs.on_finished
    assert isinstance(notifier, Notifier)
    return notifier


@pytest.fixture
def studio_factory() -> Iterator[Callable[[Settings], Studio]]:
    opened: list[Studio] = []

    def make(settings: Settings) -> Studio:
        opened.append(open_studio(settings))
        return opened[-1]

    yield make
    for studio in opened:
        studio.runs.shutdown(wait=True)
        _notifier(studio).close(timeout_s=0.5)
        studio.services.close()


def test_a_rebound_webhook_of_a_real_run_never_reaches_loopback(
        tmp_path: Path, database_url: str, tiny_onnx: Path,
        resolve_to: Callable[..., list[str]], receiver_factory: Callable[..., Receiver],
        studio_factory: Callable[[Settings], Studio], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = receiver_factory()
    studio = studio_factory(_settings(tmp_path, database_url, webhook_allow_private=False))
    lookups = resolve_to("rebind.test", [PUBLIC_V4], ["127.0.0.1"])
    caplog.set_level(logging.INFO, logger="tinymlaas.notify")
    with TestClient(create_app(studio=studio)) as http:
        victim = _user(http, "victim@example.com")
        victim.create_webhook(f"http://rebind.test:{receiver.port}/hook")
        assert lookups == [PUBLIC_V4]  # checked, and public, when registered
        run = victim.follow(victim.create_run(victim.upload_model(tiny_onnx).id,
                                              victim.add_builtin_dataset().id,
                                              pipeline=FAST).id)
        assert run.status == "succeeded"
        queue = _notifier(studio).queue
        deadline = time.monotonic() + 30
        while queue.stats()["queued"] < 1:  # queued just after the run is seen finished
            assert time.monotonic() < deadline, "the webhook was not queued"
            time.sleep(0.05)
        assert queue.wait_idle(30)
        assert queue.stats()["failed"] == 1 and queue.stats()["delivered"] == 0
    assert lookups[1:] == ["127.0.0.1"]  # refused once, and not retried
    assert receiver.connections == 0 and receiver.requests == []
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "not delivered" in r.getMessage()]
    assert len(refusals) == 1 and "internal address 127.0.0.1" in refusals[0]


# the delivery queue -----------------------------------------------------------------------


def test_a_slow_receiver_does_not_delay_anybodys_runs(
        tmp_path: Path, database_url: str, tiny_onnx: Path,
        receiver_factory: Callable[..., Receiver],
        studio_factory: Callable[[Settings], Studio]) -> None:
    slow = receiver_factory(hold=True)  # answers only when released (at most 20 s)
    studio = studio_factory(_settings(tmp_path, database_url, server_runs=2,
                                      webhook_allow_private=True, webhook_timeout_s=60))
    with TestClient(create_app(studio=studio)) as http:
        alice, bob = _user(http, "alice@example.com"), _user(http, "bob@example.com")
        alice.create_webhook(slow.url)
        model, data = alice.upload_model(tiny_onnx), alice.add_builtin_dataset()
        first = [alice.create_run(model.id, data.id, pipeline=FAST).id for _ in range(2)]
        assert [alice.follow(r).status for r in first] == ["succeeded", "succeeded"]
        deadline = time.monotonic() + 30
        while slow.started < 2:  # both deliveries are in progress, one per run slot before
            assert time.monotonic() < deadline, "the webhooks were not delivered"
            time.sleep(0.05)

        other = bob.follow(bob.create_run(bob.upload_model(tiny_onnx).id,
                                          bob.add_builtin_dataset().id, pipeline=FAST).id)
        assert other.status == "succeeded"
        again = alice.follow(alice.create_run(model.id, data.id, pipeline=FAST).id)
        assert again.status == "succeeded"
        assert slow.finished == 0  # ... while the slow receiver still holds both requests
        queue = _notifier(studio).queue
        assert queue.stats()["active"] == 2
        while queue.stats()["queued"] < 3:  # queued just after the run is seen finished
            assert time.monotonic() < deadline, "the third webhook was not queued"
            time.sleep(0.05)

        slow.release.set()
        assert queue.wait_idle(30)
        assert queue.stats()["delivered"] == 3 and slow.finished == 3


def test_5xx_is_retried_with_growing_backoff_until_it_succeeds(
        receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory(503, 502, 204)
    queue = _queue(backoff_s=0.1)
    try:
        assert queue.submit(_hook(receiver.url))
        assert queue.wait_idle(20)
        stats = queue.stats()
        assert (stats["delivered"], stats["retried"], stats["failed"]) == (1, 2, 0)
        times = [t for t, _, _ in receiver.requests]
        assert len(times) == 3
        assert times[1] - times[0] >= 0.1 and times[2] - times[1] >= 0.2
        assert len({body for _, _, body in receiver.requests}) == 1
        assert len({h["X-Tinymlaas-Signature"] for _, h, _ in receiver.requests}) == 1
    finally:
        queue.close(0.5)


def test_retries_stop_after_the_configured_attempts(
        receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory(500)
    queue = _queue(attempts=3)
    try:
        queue.submit(_hook(receiver.url))
        assert queue.wait_idle(20)
        assert len(receiver.requests) == 3
        assert queue.stats()["failed"] == 1
    finally:
        queue.close(0.5)


@pytest.mark.parametrize("status", [400, 404, 410, 429])
def test_4xx_is_not_retried(receiver_factory: Callable[..., Receiver], status: int) -> None:
    receiver = receiver_factory(status, 204)
    queue = _queue()
    try:
        queue.submit(_hook(receiver.url))
        assert queue.wait_idle(20)
        assert len(receiver.requests) == 1
        assert (queue.stats()["failed"], queue.stats()["retried"]) == (1, 0)
    finally:
        queue.close(0.5)


def test_redirects_are_not_followed(receiver_factory: Callable[..., Receiver]) -> None:
    target = receiver_factory()
    redirecting = receiver_factory(307, headers={"Location": target.url})
    queue = _queue()
    try:
        queue.submit(_hook(redirecting.url))
        assert queue.wait_idle(20)
        assert len(redirecting.requests) == 1 and target.connections == 0
        assert queue.stats()["failed"] == 1
    finally:
        queue.close(0.5)


def test_a_retry_waiting_for_its_backoff_does_not_hold_other_deliveries(
        receiver_factory: Callable[..., Receiver]) -> None:
    failing_once = receiver_factory(503, 204)
    healthy = receiver_factory()
    queue = _queue(workers=1, backoff_s=1.0)  # one worker: a sleeping retry would block it
    try:
        queue.submit(_hook(failing_once.url, "first"))
        deadline = time.monotonic() + 10
        while not failing_once.requests:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        queue.submit(_hook(healthy.url, "second"))
        assert queue.wait_idle(20)
        assert len(failing_once.requests) == 2 and len(healthy.requests) == 1
        first_try, retry = failing_once.requests[0][0], failing_once.requests[1][0]
        assert first_try < healthy.requests[0][0] < retry
        assert queue.stats()["delivered"] == 2
    finally:
        queue.close(0.5)


def test_a_full_queue_drops_and_logs_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tinymlaas.notify")
    gate = threading.Event()
    sent: list[str] = []

    def delivery(name: str) -> Delivery:
        def send() -> Attempt:
            gate.wait(20)
            sent.append(name)
            return Attempt(True)
        return Delivery(name, send)

    queue = _queue(max_pending=2, workers=1)
    try:
        assert queue.submit(delivery("d1"))
        deadline = time.monotonic() + 10
        while queue.stats()["active"] < 1:  # the worker holds d1 until the gate opens
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert queue.submit(delivery("d2")) and queue.submit(delivery("d3"))
        assert not queue.submit(delivery("d4"))  # returns at once: the gate is still shut
        assert not gate.is_set()
        assert any("full" in r.getMessage() and "dropped d4" in r.getMessage()
                   and r.levelno == logging.WARNING for r in caplog.records)
        gate.set()
        assert queue.wait_idle(20)
        assert sent == ["d1", "d2", "d3"]
        assert (queue.stats()["delivered"], queue.stats()["dropped"]) == (3, 1)
    finally:
        gate.set()
        queue.close(0.5)


def test_closing_waits_briefly_then_gives_up(receiver_factory: Callable[..., Receiver]) -> None:
    stuck = receiver_factory(hold=True)
    queue = _queue(workers=1)
    queue.submit(_hook(stuck.url, "stuck"))
    queue.submit(_hook(stuck.url, "behind"))
    deadline = time.monotonic() + 10
    while not stuck.requests:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    queue.close(timeout_s=0.3)
    assert time.monotonic() - started < 5  # did not wait for the held request
    assert stuck.finished == 0
    assert queue.stats()["dropped"] == 1  # "behind"
    assert not queue.submit(_hook(stuck.url, "late"))


class Dripper:
    """A receiver on 127.0.0.1 that answers one byte every 0.1 s, forever: each read gets
    data well within any read timeout, so only an overall deadline ends the attempt."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nX-Pad: "
            index = 0
            while not self.stop.is_set():
                try:
                    conn.sendall(head[index:index + 1] if index < len(head) else b"a")
                except OSError:
                    return
                index += 1
                self.sent += 1
                time.sleep(0.1)


def test_the_time_limit_bounds_a_slow_drip_receiver() -> None:
    dripper = Dripper()
    try:
        url = f"http://127.0.0.1:{dripper.port}/hook"
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            post_webhook(url, "s3cret", "run.succeeded", b"{}", timeout_s=1.0,
                         allow_private=True)
        elapsed = time.monotonic() - started
        assert dripper.sent >= 5  # it was still sending when the attempt ended
        assert elapsed < 4  # the drip alone would go on until stopped
        result = _hook(url, timeout_s=0.3).send()  # a timeout is retried by the queue
        assert not result.ok and result.retry
    finally:
        dripper.stop.set()
        dripper.sock.close()
