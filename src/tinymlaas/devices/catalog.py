"""The device catalog: target profiles shipped with the package.

The catalog is a YAML file (``catalog.yaml``) next to this module. Entries are validated
into :class:`tinymlaas.domain.Device` once and cached; callers get copies, so they can not
change the catalog by accident.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

from tinymlaas.domain import Device
from tinymlaas.errors import InvalidInputError, NotFoundError

__all__ = ["device_names", "get_device", "load_catalog"]


@cache
def _catalog() -> tuple[Device, ...]:
    text = resources.files("tinymlaas.devices").joinpath("catalog.yaml").read_text("utf-8")
    data = yaml.safe_load(text) or {}
    devices = tuple(Device.model_validate(entry) for entry in data.get("devices", []))
    names = [device.name for device in devices]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidInputError(
            f"The device catalog names {', '.join(duplicates)} more than once.",
            {"duplicates": duplicates},
        )
    return devices


def load_catalog() -> list[Device]:
    """Every device of the built-in catalog, in catalog order.

    Returns:
        Fresh copies of the catalog entries.
    """
    return [device.model_copy(deep=True) for device in _catalog()]


def device_names() -> list[str]:
    """The names of the catalog's devices, in catalog order."""
    return [device.name for device in _catalog()]


def get_device(name: str) -> Device:
    """One catalog device by name.

    Args:
        name: The device's catalog name, e.g. ``stm32-nucleo-l4r5zi``.

    Returns:
        A copy of the device profile.

    Raises:
        NotFoundError: No catalog device has that name; the message lists the known names.
    """
    for device in _catalog():
        if device.name == name:
            return device.model_copy(deep=True)
    known = device_names()
    raise NotFoundError(
        f"Unknown device {name!r}. Known devices: {', '.join(known)}.",
        {"name": name, "known": known},
    )
