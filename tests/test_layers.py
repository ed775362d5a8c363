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
