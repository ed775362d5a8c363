"""Fixtures of the API tests: a Studio on SQLite and PostgreSQL, an in-process client,
users with tokens, and a tiny ONNX classifier for the digits dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from api_support import make_settings, new_user
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tinymlaas.api.deps import Studio
from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.client import Client
from tinymlaas.config import Settings
from tinymlaas.server import create_app, open_studio


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits_onnx(tmp_path_factory.mktemp("tiny") / "digits.onnx")


@pytest.fixture
def api_settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "home", database_url)


@pytest.fixture
def studio(api_settings: Settings) -> Iterator[Studio]:
    studio = open_studio(api_settings)
    yield studio
    studio.runs.shutdown(wait=True)
    studio.services.close()


@pytest.fixture
def app(studio: Studio) -> FastAPI:
    return create_app(studio=studio)


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def user(http: TestClient) -> Callable[[str], Client]:
    return lambda email: new_user(http, email)


@pytest.fixture
def alice(http: TestClient) -> Client:
    return new_user(http, "alice@example.com")


@pytest.fixture
def bob(http: TestClient) -> Client:
    return new_user(http, "bob@example.com")


@pytest.fixture
def alice_model(alice: Client, tiny_onnx: Path):
    return alice.upload_model(tiny_onnx, name="digits-logreg")


@pytest.fixture
def alice_data(alice: Client):
    return alice.add_builtin_dataset("digits")
