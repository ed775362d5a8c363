"""The SDK without the server stack, here (no fresh install): a child Python in which
importing the server's packages fails, as on a machine with ``pip install tinymlaas``, imports
``tinymlaas.Client`` and uses it against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinymlaas.api.testing import LiveServer, serve_in_thread
from tinymlaas.config import Settings
from tinymlaas.server import create_app, open_studio

HEAVY = ("sqlalchemy", "fastapi", "starlette", "onnx", "torch", "onnxruntime", "alembic")
BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {set(HEAVY)!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is blocked (not in the plain install)",
                                      name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    studio = open_studio(Settings(home=tmp_path / "server-home",
                                  database_url=f"sqlite:///{tmp_path / 'meta.db'}"))
    try:
        with serve_in_thread(create_app(studio=studio)) as live:
            yield live
    finally:
        studio.runs.shutdown(wait=True)
        studio.services.close()


def test_the_sdk_imports_without_the_server_stack() -> None:
    done = _run("from tinymlaas import Client\n"
                "import tinymlaas.client\n"
                "assert Client is tinymlaas.client.Client\n"
                f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
                "print(sorted(m for m in sys.modules if m.startswith('tinymlaas.')"
                " and m.split('.')[1] in ('service', 'store', 'engine', 'cli', 'server')))\n"
                "import sqlalchemy\n")
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["[]", "[]"], done.stderr
    assert "sqlalchemy is blocked" in done.stderr  # the blocker does block


def test_the_sdk_without_the_server_stack_talks_to_a_server(server: LiveServer,
                                                            tiny_onnx: Path) -> None:
    code = f"""
import json
from tinymlaas import Client
from tinymlaas.errors import AuthenticationError
with Client({server.url!r}) as studio:
    studio.register("sam@example.com", "correct horse battery", "Sam")
    try:
        studio.login("sam@example.com", "wrong password")
    except AuthenticationError as exc:
        refused = type(exc).__name__
    studio.login("sam@example.com", "correct horse battery")
    model = studio.upload_model({str(tiny_onnx)!r}, name="digits")
    print(json.dumps({{
        "me": studio.me().email,
        "refused": refused,
        "devices": [d.name for d in studio.list_devices()],
        "model": [model.name, model.kind],
        "models": [m.id for m in studio.list_models()] == [model.id],
        "blocked": sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}),
    }}))
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["me"] == "sam@example.com"
    assert answer["refused"] == "AuthenticationError"
    assert "stm32f746-discovery" in answer["devices"]
    assert answer["model"] == ["digits", "onnx"]
    assert answer["models"] is True
    assert answer["blocked"] == []
