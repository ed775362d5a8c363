"""Content-addressed blob storage: the local directory, and a server's signed blob URLs
(:mod:`tinymlaas.artifacts.http`, imported on its own: it needs httpx only)."""

from tinymlaas.artifacts.base import ArtifactStore
from tinymlaas.artifacts.local import LocalArtifactStore, sha256_file

__all__ = ["ArtifactStore", "LocalArtifactStore", "sha256_file"]
