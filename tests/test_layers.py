"""The layers of the package: no module imports one from a layer above its own.

Same-layer imports are allowed. The compiler core is a pure library (ONNX in, C out, plus
the host runner), so it sits with evaluation and devices, which use it; the ``compile-c``
transformer is where it becomes a pipeline step.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tinymlaas"

LAYERS: dict[str, int] = {
    **dict.fromkeys(["domain", "errors", "config", "templates"], 0),
    **dict.fromkeys(["store", "artifacts"], 1),
    **dict.fromkeys(["formats", "evaluation", "devices", "compiler"], 2),
    "transformers": 3,
    "executors": 4,
    "engine": 5,
    **dict.fromkeys(["service", "optimize", "notify"], 6),
    **dict.fromkeys(["api", "web", "cli", "client", "demo", "__init__"], 7),
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "tinymlaas" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_package_has_a_layer() -> None:
    packages = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert packages <= set(LAYERS), f"give these a layer: {sorted(packages - set(LAYERS))}"


def test_no_module_imports_from_a_layer_above() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for target in _imports(path):
            if LAYERS[target] > LAYERS[own]:
                upward.append(f"{path.relative_to(PACKAGE)} ({own}) imports {target}")
    assert upward == []


def test_the_engine_and_below_never_touch_web_frameworks() -> None:
    for path in PACKAGE.rglob("*.py"):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if LAYERS[own] <= LAYERS["engine"]:
            text = path.read_text()
            assert "import fastapi" not in text and "from fastapi" not in text, path
