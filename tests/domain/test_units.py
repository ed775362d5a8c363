"""The one size formatter every view uses: binary units, no "KB" or "MB"."""

from __future__ import annotations

import pytest

from tinymlaas.domain.units import human_bytes, human_kib, human_mib


@pytest.mark.parametrize(("value", "text"), [
    (0, "0 B"),
    (1, "1 B"),
    (1023, "1023 B"),
    (1024, "1 KiB"),
    (1536, "1.5 KiB"),
    (256 * 1024, "256 KiB"),
    (1024 * 1024 - 1, "1 MiB"),  # 1023.999 KiB would read "1024 KiB"
    (1024 * 1024 - 200, "1023.8 KiB"),
    (1024 * 1024, "1 MiB"),
    (4 * 1024 * 1024, "4 MiB"),
    (int(2.25 * 1024 * 1024), "2.2 MiB"),  # round half to even
    (3 * 1024**3, "3 GiB"),
    (5 * 1024**4, "5 TiB"),
    (2048 * 1024**4, "2048 TiB"),
    (-1536, "-1.5 KiB"),
    (1536.0, "1.5 KiB"),
])
def test_human_bytes(value: float, text: str) -> None:
    assert human_bytes(value) == text


def test_unknown_sizes() -> None:
    assert human_bytes(None) == "-"
    assert human_bytes(None, "–") == "–"
    assert human_kib(None) == "-" and human_mib(None, "n/a") == "n/a"


def test_catalog_kib_and_memory_mib() -> None:
    assert human_kib(256) == "256 KiB"
    assert human_kib(1024) == "1 MiB"
    assert human_kib(4096) == "4 MiB"
    assert human_kib(4 * 1024 * 1024) == "4 GiB"
    assert human_mib(0.5) == "512 KiB"
    assert human_mib(12.25) == "12.2 MiB"
    for value in (0, 1023, 1024, 1536, 4 * 1024 * 1024, 10**12):
        assert not any(unit in human_bytes(value) for unit in ("KB", "MB", "GB", "kB"))
