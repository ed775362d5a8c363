"""``pip install tinymlaas`` (no extras) is the SDK's and the device agent's install: it
brings no server stack, the agent runs, the SDK talks to a server, and a server command says
what to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tinymlaas.api.testing import free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sqlalchemy", "fastapi", "torch", "onnx", "onnxruntime", "alembic", "starlette")


def test_base_dependencies_leave_the_server_stack_to_its_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower()
            for d in project["dependencies"]}
    assert not base & {"torch", "onnx", "onnxruntime", "sqlalchemy", "fastapi", "uvicorn"}
    server = " ".join(project["optional-dependencies"]["server"])
    assert all(name in server for name in ("torch==", "sqlalchemy", "fastapi", "onnx=="))


@pytest.fixture(scope="module")
def plain_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a fresh venv with ``pip install tinymlaas`` (no extras) in it."""
    tmp_path = tmp_path_factory.mktemp("plain")
    source = tmp_path / "source"  # a copy: building in the tree would leave build/ behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(source)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return python


@pytest.mark.slow
def test_the_plain_install_runs_the_agent_without_the_server_stack(
        plain_python: Path, tmp_path: Path) -> None:
    python = plain_python
    venv = python.parent.parent
    probe = ("import importlib.util as u, sys; "
             f"print([m for m in {HEAVY!r} if u.find_spec(m)])")
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                           check=True, timeout=60)
    assert found.stdout.strip() == "[]", "the plain install pulled in the server stack"

    imports = subprocess.run(
        [str(python), "-c", "import tinymlaas.agent.runner, tinymlaas.contracts.ota; "
         "print('ok')"], capture_output=True, text=True, timeout=60, check=False)
    assert imports.stdout.strip() == "ok", imports.stderr
    cli = venv / "bin" / "tinymlaas"
    helped = subprocess.run([str(cli), "agent", "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert helped.returncode == 0 and "--root" in helped.stdout, helped.stderr
    server = subprocess.run([str(cli), "--home", str(tmp_path / "home"), "models", "list"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert server.returncode == 1
    assert "pip install 'tinymlaas[server]'" in server.stderr, server.stderr


@pytest.mark.slow
def test_the_plain_install_is_the_sdk_of_a_server(plain_python: Path, tmp_path: Path) -> None:
    """``from tinymlaas import Client`` loads none of the server stack, and the SDK registers,
    logs in and reads the catalog of a real ``tinymlaas serve`` (run from the full install)."""
    env = {**os.environ, "TINYMLAAS_HOME": str(tmp_path / "server-home")}
    for name in ("TINYMLAAS_DATABASE_URL", "TINYMLAAS_SERVER", "TINYMLAAS_TOKEN"):
        env.pop(name, None)
    port = free_port()
    process = start_server(env, port)
    try:
        code = f"""
import json, sys
from tinymlaas import Client
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
with Client("http://127.0.0.1:{port}") as studio:
    studio.register("sam@example.com", "correct horse battery", "Sam")
    login = studio.login("sam@example.com", "correct horse battery")
    print(json.dumps({{
        "loaded": loaded,
        "token": bool(login.access_token),
        "me": studio.me().email,
        "devices": [d.name for d in studio.list_devices()],
        "models": [m.name for m in studio.list_models()],
        "after": sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}),
    }}))
"""
        done = subprocess.run([str(plain_python), "-c", code], capture_output=True, text=True,
                              timeout=120, check=False)
    finally:
        stop_server(process)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert answer["loaded"] == [] and answer["after"] == [], answer
    assert answer["token"] is True and answer["me"] == "sam@example.com"
    assert {"stm32f746-discovery", "raspberry-pi-pico"} <= set(answer["devices"])
    assert answer["models"] == []
