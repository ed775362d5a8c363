"""Fixtures of the agent's tests: the project's release key and one built package."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_support import build_package
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@pytest.fixture(scope="session")
def release_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A python-wheel of a linear model and its golden NPZ."""
    return build_package(tmp_path_factory.mktemp("package"))
