"""The hostile-user suite: a real ``tinymlaas serve`` process on SQLite and PostgreSQL,
a victim (alice, the first account and so the admin) and an attacker (mallory)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from security_support import Server

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.client import Client


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits_onnx(tmp_path_factory.mktemp("tiny") / "digits.onnx")


@pytest.fixture
def make_server(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Server]]:
    """Start a server with extra ``TINYMLAAS_*`` environment: ``make_server(VAR="value")``."""
    servers: list[Server] = []

    def make(**env: str) -> Server:
        server = Server(tmp_path / f"home{len(servers)}", database_url)
        servers.append(server)
        return server.start(**env)

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    """A server with the defaults an operator gets."""
    return make_server()


@pytest.fixture
def alice(server: Server) -> Client:
    """The first account: the server's admin."""
    return server.user("alice@example.com")


@pytest.fixture
def mallory(server: Server, alice: Client) -> Client:
    """A self-registered second account, hostile."""
    return server.user("mallory@example.com")

