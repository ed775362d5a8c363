"""Sizes as people read them, the same in every view: binary units (B, KiB, MiB, GiB, TiB).

The device catalog's ``ram_kb`` and ``flash_kb`` count KiB (1024 bytes); give them to
:func:`human_kib`, which shows 256 KiB, 1 MiB or 4 MiB, never a count of "KB".
"""

from __future__ import annotations

__all__ = ["UNITS", "human_bytes", "human_kib", "human_mib"]

#: The units, each 1024 times the one before.
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(value: float | None, missing: str = "-") -> str:
    """``value`` bytes in the largest unit that keeps the number under 1024: whole bytes,
    one decimal above them, without a trailing ``.0`` (1 KiB, 1.5 KiB, 4 MiB);
    ``missing`` when unknown."""
    if value is None:
        return missing
    size = float(value)
    if abs(size) < 1024:
        return f"{size:.0f} B"
    for unit in UNITS[1:]:
        size /= 1024
        # move up while rounding would show 1024.0 of this unit
        if round(abs(size), 1) < 1024 or unit == UNITS[-1]:
            text = f"{size:.1f}"
            return f"{text.removesuffix('.0')} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_kib(kib: float | None, missing: str = "-") -> str:
    """A size counted in KiB (the device catalog's ``ram_kb`` and ``flash_kb``)."""
    return missing if kib is None else human_bytes(kib * 1024, missing)


def human_mib(mib: float | None, missing: str = "-") -> str:
    """A size counted in MiB (a run's ``peak_memory_mb``, measured in units of 1024 KiB)."""
    return missing if mib is None else human_bytes(mib * 1024 * 1024, missing)
