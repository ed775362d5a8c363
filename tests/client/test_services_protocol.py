"""The CLI's services object, here (``Services``) or on a server (``RemoteServices``): both
have every method of :class:`~tinymlaas.service.protocol.ServicesProtocol` with parameters of
the same names and kinds, and the protocol names every method a CLI command calls on it, so
each command works the same against a server."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from tinymlaas.cli.remote import RemoteServices
from tinymlaas.service import Services
from tinymlaas.service.protocol import ServicesProtocol

CLI = Path(__file__).resolve().parents[2] / "src" / "tinymlaas" / "cli"
METHODS = sorted(name for name, value in vars(ServicesProtocol).items()
                 if inspect.isfunction(value) and not name.startswith("_"))
#: Only on ``RemoteServices``, used after the CLI has checked it has one.
REMOTE_ONLY = {"client"}


def _incompatibilities(protocol: inspect.Signature, impl: inspect.Signature) -> list[str]:
    """Why ``impl`` cannot be called as ``protocol`` says (empty when it can)."""
    problems = []
    wanted = list(protocol.parameters.values())
    given = impl.parameters
    positional = [p.name for p in given.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for index, param in enumerate(wanted):
        other = given.get(param.name)
        if other is None:
            problems.append(f"no parameter {param.name!r}")
            continue
        if other.kind != param.kind:
            problems.append(f"{param.name!r} is {other.kind.description}, not "
                            f"{param.kind.description}")
        in_place = positional[index:index + 1] == [param.name]
        if param.kind is param.POSITIONAL_OR_KEYWORD and not in_place:
            problems.append(f"{param.name!r} is not positional parameter {index}")
        if param.default is not param.empty and other.default is other.empty:
            problems.append(f"{param.name!r} has no default")
    names = {p.name for p in wanted}
    problems += [f"extra parameter {p.name!r} has no default" for p in given.values()
                 if p.name not in names and p.default is p.empty
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return problems


def test_the_protocol_names_the_services_the_cli_uses() -> None:
    assert {"add_model", "create_run", "execute_run", "compare", "delete_project",
            "signing_key", "analyze", "close"} <= set(METHODS)


@pytest.mark.parametrize("implementation", [Services, RemoteServices])
def test_both_services_have_every_method_of_the_protocol(implementation: type) -> None:
    problems = {}
    for name in METHODS:
        method = getattr(implementation, name, None)
        if not callable(method):
            problems[name] = ["missing"]
            continue
        found = _incompatibilities(inspect.signature(getattr(ServicesProtocol, name)),
                                   inspect.signature(method))
        if found:
            problems[name] = found
    assert problems == {}, f"{implementation.__name__} differs from ServicesProtocol"


def test_the_check_tells_an_incompatible_signature() -> None:
    def protocol(self, ref: str, *, force: bool = False) -> None: ...
    def renamed(self, name: str, *, force: bool = False) -> None: ...
    def positional_force(self, ref: str, force: bool = False) -> None: ...
    def required_extra(self, ref: str, project: str, *, force: bool = False) -> None: ...
    def wider(self, ref: str, project: str | None = None, *, force: bool = False) -> None: ...

    want = inspect.signature(protocol)
    assert _incompatibilities(want, inspect.signature(renamed)) == [
        "no parameter 'ref'", "extra parameter 'name' has no default"]
    assert _incompatibilities(want, inspect.signature(positional_force)) == [
        "'force' is positional or keyword, not keyword-only"]
    assert _incompatibilities(want, inspect.signature(required_extra)) == [
        "extra parameter 'project' has no default"]
    assert _incompatibilities(want, inspect.signature(wider)) == []


def _cli_calls() -> dict[str, set[str]]:
    """Methods the CLI calls on ``services()``, directly or through a name bound to it, by
    file."""
    calls: dict[str, set[str]] = {}
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text())
        bound: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _is_services_call(node.value):
                bound |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and (
                    _is_services_call(node.value)
                    or (isinstance(node.value, ast.Name) and node.value.id in bound)):
                calls.setdefault(path.name, set()).add(node.attr)
    return calls


def _is_services_call(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "services")


def test_every_method_the_cli_calls_on_its_services_is_in_the_protocol() -> None:
    calls = _cli_calls()
    assert {"list_models", "delete_run", "signing_key"} <= calls["main.py"]  # the scan works
    used = set().union(*calls.values()) - REMOTE_ONLY
    assert used - set(METHODS) == set(), "a CLI command calls a method the protocol lacks"
