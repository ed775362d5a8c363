"""The agent installs without the server stack: with SQLAlchemy, FastAPI, Starlette, ONNX,
torch and Alembic unimportable, its command line still loads and runs."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import importlib.abc, sys
BLOCKED = {"sqlalchemy", "fastapi", "starlette", "onnx", "torch", "alembic"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked (not installed on a device)")
        return None
sys.meta_path.insert(0, Blocker())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True,
                          text=True, timeout=120, check=False)


def test_agent_imports_without_the_server_stack() -> None:
    done = _run("import tinymlaas.agent.cli, tinymlaas.agent.runner, tinymlaas.agent.ddi, "
                "tinymlaas.agent.health, tinymlaas.agent.slots\n"
                "blocked = {'sqlalchemy', 'fastapi', 'starlette', 'onnx', 'torch', 'alembic'}\n"
                "print(sorted(m for m in sys.modules if m.split('.')[0] in blocked))\n"
                "import sqlalchemy\n")
    assert done.returncode == 1
    assert done.stdout.strip() == "[]"
    assert "sqlalchemy is blocked" in done.stderr  # the blocker does block


def test_agent_help_works_without_the_server_stack() -> None:
    done = _run("import sys\nfrom tinymlaas.agent.cli import main\n"
                "sys.argv = ['tinymlaas-agent', '--help']\nmain()\n")
    assert done.returncode == 0, done.stderr
    assert "--root" in done.stdout and "--gateway" in done.stdout
