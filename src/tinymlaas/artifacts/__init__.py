"""Content-addressed blob storage."""

from tinymlaas.artifacts.local import LocalArtifactStore, sha256_file

__all__ = ["LocalArtifactStore", "sha256_file"]
