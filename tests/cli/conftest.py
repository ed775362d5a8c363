"""Fixtures for CLI tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def ready(cli, digits_cnn):
    code, out, err = cli("models", "add", digits_cnn[0], "--name", "digits-cnn")
    assert code == 0, err
    assert "registered model digits-cnn" in out and "151,498 parameters" in out
    code, out, err = cli("datasets", "add", "digits")
    assert code == 0, err
    assert "1797 samples of shape [1, 8, 8]" in out and "10 classes" in out
    return cli
