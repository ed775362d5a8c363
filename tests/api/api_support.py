"""Helpers shared by the API tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from helpers import step_python
from tinymlaas.client import Client
from tinymlaas.config import Settings

PASSWORD = "correct horse battery"
#: A pipeline that runs in about a second: one step, no evaluation.
FAST = {"steps": ["fuse"], "evaluate": False}
API = "/api/v1"


def make_settings(home: Path, database_url: str, **overrides: object) -> Settings:
    """Test settings; webhooks may target this machine (test receivers run on loopback) and
    everyone may run command steps (the tests' slow and failing steps are commands)."""
    values: dict[str, object] = {"step_timeout_s": 120, "step_memory_mb": 4096,
                                 "login_rate_limit": 5, "webhook_allow_private": True,
                                 "external_steps": "everyone", **overrides}
    return Settings(home=home, database_url=database_url, **values)  # type: ignore[arg-type]


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


def wait_for(condition: Callable[[], bool], limit_s: float = 120.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


def sleep_once(marker: Path, seconds: int = 300) -> list[str]:
    """An external step command that sleeps the first time (leaving ``marker``), then copies
    its input: a run that hangs once and succeeds when resubmitted. ``marker`` must be in a
    directory the sandbox user may write (the ``shared_dir`` fixture)."""
    return [step_python(), "-c",
            "import os, shutil, sys, time\n"
            "if not os.path.exists(sys.argv[3]):\n"
            f"    open(sys.argv[3], 'w').close(); time.sleep({seconds})\n"
            "shutil.copy(sys.argv[1] + '/model.onnx', sys.argv[2])",
            "{in}", "{out}", str(marker)]
