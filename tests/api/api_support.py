"""Helpers shared by the API tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tinymlaas.client import Client
from tinymlaas.config import Settings

PASSWORD = "correct horse battery"
#: A pipeline that runs in about a second: one step, no evaluation.
FAST = {"steps": ["fuse"], "evaluate": False}
API = "/api/v1"


def make_settings(home: Path, database_url: str, **overrides: object) -> Settings:
    return Settings(home=home, database_url=database_url, step_timeout_s=120,
                    step_memory_mb=4096, login_rate_limit=5, **overrides)  # type: ignore[arg-type]


def new_user(http: TestClient, email: str) -> Client:
    """Register ``email``, log in, and return an SDK client with the token."""
    client = Client(http=http)
    client.register(email, PASSWORD, email.split("@")[0])
    client.login(email, PASSWORD)
    return client


def assert_error_shape(body: dict, code: str | None = None) -> None:
    """The one error body shape."""
    assert set(body) == {"code", "message", "details"}, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)
    if code is not None:
        assert body["code"] == code, body
