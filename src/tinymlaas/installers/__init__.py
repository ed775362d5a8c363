"""Installers: package a compressed model with a runtime, in the form its target takes.

Each installer is a transformer (``package-c``, ``package-python``, ``package-docker``,
``sign-image``); the work of building the package lives here, below the transformers, so
that it touches files only. Resource files ship under ``files/`` as ``*.tmpl``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import TinymlaasError

__all__ = ["MAX_MANIFEST_BYTES", "read_manifest"]

#: The most of a manifest that is read (a real one is a few KiB).
MAX_MANIFEST_BYTES = 1 << 20


def read_manifest(path: Path, kind: ArtifactKind) -> dict[str, Any] | None:
    """What a package says about itself: ``manifest.json`` at the root of a C bundle or a
    signed image, ``metadata.json`` of a build context, the model metadata of a wheel; None
    when there is none or it cannot be read."""
    if kind is ArtifactKind.python_wheel:
        from tinymlaas.installers.wheel import read_wheel

        try:
            return read_wheel(path).metadata
        except TinymlaasError:
            return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            member = next((n for n in ("manifest.json", "metadata.json") if n in names), None)
            if member is None or archive.getinfo(member).file_size > MAX_MANIFEST_BYTES:
                return None
            manifest = json.loads(archive.read(member))
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None
