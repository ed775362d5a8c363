"""What every artifact store offers: blobs in and out by their sha256."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["ArtifactStore"]


@runtime_checkable
class ArtifactStore(Protocol):
    """Content-addressed blobs: the local directory of a server
    (:class:`~tinymlaas.artifacts.LocalArtifactStore`) or a server's signed blob URLs seen
    from a site worker (:class:`~tinymlaas.artifacts.http.HttpArtifactStore`)."""

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        ...

    def get_file(self, sha256: str, target: Path) -> Path:
        """Write the blob to ``target`` (its sha256 checked) and return ``target``."""
        ...

    def put_file(self, source: Path) -> tuple[str, int]:
        """Store ``source``'s bytes; returns their sha256 and size."""
        ...
