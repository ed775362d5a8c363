"""Fixtures of the SDK and remote-CLI tests: a real server (uvicorn on a free localhost
port) over a Studio on SQLite and PostgreSQL, and a user with an API token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tinymlaas.api.testing import LiveServer, serve_in_thread, write_digits_onnx
from tinymlaas.client import Client
from tinymlaas.config import Settings
from tinymlaas.server import create_app, open_studio

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits_onnx(tmp_path_factory.mktemp("tiny") / "digits.onnx")


@pytest.fixture
def live(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    studio = open_studio(Settings(home=tmp_path / "server-home", database_url=database_url,
                                  step_timeout_s=120, step_memory_mb=4096))
    try:
        with serve_in_thread(create_app(studio=studio)) as server:
            yield server
    finally:
        studio.runs.shutdown(wait=True)
        studio.services.close()


@pytest.fixture
def sdk(live: LiveServer) -> Iterator[Client]:
    """A registered, logged-in user's client."""
    with Client(live.url) as client:
        client.register("dana@example.com", PASSWORD, "Dana")
        client.login("dana@example.com", PASSWORD)
        yield client
