"""Fixtures of the agent's tests: a release key and one built package for the unit tests,
the real server for the end-to-end ones."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_e2e import PASSWORD, Studio, make_run
from agent_support import build_package
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from helpers import linear_onnx
from tinymlaas.api.testing import free_port, start_server, stop_server
from tinymlaas.client import Client


@pytest.fixture(scope="session")
def release_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A python-wheel of a linear model and its golden NPZ."""
    return build_package(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="session")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """The real server (``tinymlaas serve``) with a user and a package-python run."""
    base = tmp_path_factory.mktemp("studio")
    home = base / "home"
    env = {**os.environ, "TINYMLAAS_HOME": str(home), "TINYMLAAS_LOGIN_RATE_LIMIT": "1000"}
    env.pop("TINYMLAAS_DATABASE_URL", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = base / "server.log"
    try:
        server = start_server(env, port, output=log.open("ab"))
    except RuntimeError as exc:
        pytest.fail(f"{exc}: {log.read_text()[-3000:]}")
    try:
        with Client(url) as anonymous:
            anonymous.register("fleet@example.com", PASSWORD)
            anonymous.login("fleet@example.com", PASSWORD)
            token = anonymous.create_token("fleet").token
        with Client(url, token) as client:
            model = linear_onnx(base / "linear-model.onnx", features=256, classes=64)
            run_id = make_run(client, model)
            yield Studio(url, home, client, client.me().default_project, run_id, model)
    finally:
        stop_server(server)
