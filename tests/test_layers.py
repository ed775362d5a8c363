"""The package layers point down: the import-linter contracts in pyproject.toml hold.

They are the one statement of the layering (``make test`` runs ``lint-imports`` too):
every top-level module has a layer, none imports one above its own, the web never calls
the API's route handlers, nothing from the engine down imports a web framework, and the
ML work (transformers, compiler, evaluation, devices, formats) never touches the database.
"""

from __future__ import annotations

from pathlib import Path

from importlinter import configuration
from importlinter.application.use_cases import lint_imports

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_import_contracts_hold(capsys) -> None:
    configuration.configure()
    kept = lint_imports(config_filename=str(PYPROJECT), cache_dir=None, no_logo=True)
    assert kept, capsys.readouterr().out


def _package_edges() -> dict[str, set[str]]:
    """Direct imports between the top-level packages of ``tinymlaas`` (lazy and
    ``TYPE_CHECKING`` imports included), the root package left out."""
    import grimp

    graph = grimp.build_graph("tinymlaas")
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        parts = module.split(".")
        if len(parts) < 2:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            target = imported.split(".")
            if len(target) >= 2 and target[1] != parts[1]:
                edges.setdefault(parts[1], set()).add(target[1])
    return edges


def test_no_two_packages_import_each_other_outside_the_ml_core() -> None:
    """The API and the web pages, the CLI and the demo, ...: no cycles between packages,
    except among the compiler, evaluation, devices and formats, which share helpers."""
    edges = _package_edges()
    allowed = {"compiler", "evaluation", "devices", "formats"}
    cycles = sorted((a, b) for a, targets in edges.items() for b in targets
                    if a < b and a in edges.get(b, set()) and not {a, b} <= allowed)
    assert not cycles, f"packages that import each other: {cycles}"
    # the server composes the two entry points; neither imports the other's pages or app
    assert {"api", "web"} <= edges["server"]
    assert "web" not in edges["api"] and "server" not in edges["web"]
