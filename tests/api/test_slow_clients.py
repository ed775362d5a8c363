"""``tinymlaas serve`` does not let a slow or silent client hold a connection: a request
whose headers stop arriving (slowloris) and a kept-alive connection left idle are closed,
while the server keeps answering everyone else."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tinymlaas.api.testing import free_port, start_server, stop_server
from tinymlaas.cli.main import HEADER_TIMEOUT_S

#: Far past the header timeout: a connection still open then is held for good.
GIVE_UP_S = 6 * HEADER_TIMEOUT_S


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    home = tmp_path_factory.mktemp("slow") / "home"
    port = free_port()
    server = start_server({**os.environ, "TINYMLAAS_HOME": str(home)}, port)
    try:
        yield port
    finally:
        stop_server(server)


def _closed_after(sock: socket.socket) -> float | None:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends), or
    None when it is still open after :data:`GIVE_UP_S`."""
    began = time.monotonic()
    sock.settimeout(GIVE_UP_S)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - began


def test_a_request_whose_headers_never_end_is_dropped(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: studio\r\nX-Slow: ")
        for _ in range(3):  # a trickle, as a slowloris client sends
            time.sleep(1)
            sock.sendall(b"a")
        closed = _closed_after(sock)
    assert closed is not None, f"a half-sent request held its connection {GIVE_UP_S} s"
    assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200


def test_an_idle_kept_alive_connection_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: studio\r\n\r\n")
        sock.settimeout(30)
        assert sock.recv(12).startswith(b"HTTP/1.1 200")
        closed = _closed_after(sock)
    assert closed is not None, f"an idle connection was kept {GIVE_UP_S} s"
