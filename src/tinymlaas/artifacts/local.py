"""Artifacts on the local file system, addressed by the sha256 of their bytes.

A blob is written once: copied to a temp file in the same directory, fsynced, then
``os.replace``d into ``<root>/<sha[:2]>/<sha>``. Directories are stored as deterministic
zip files (sorted entries, fixed timestamps) so the same tree always has the same address.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

from tinymlaas.errors import NotFoundError, PayloadTooLargeError

__all__ = ["LocalArtifactStore", "sha256_file", "zip_directory"]

_CHUNK = 1 << 20
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def zip_directory(source: Path, target: Path) -> None:
    """Write ``source``'s files into ``target`` reproducibly (same tree, same bytes)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(source).as_posix(), date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())


class LocalArtifactStore:
    """Blobs under ``root``; safe for several processes writing at once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where a blob lives; raises ``NotFoundError`` when it is not stored."""
        path = self._location(sha256)
        if not path.is_file():
            raise NotFoundError(f"artifact blob {sha256[:12]} is missing from {self.root}")
        return path

    def exists(self, sha256: str) -> bool:
        return self._location(sha256).is_file()

    def put_file(self, source: Path) -> tuple[str, int]:
        """Store a copy of ``source``; returns its sha256 and size."""
        with source.open("rb") as fh:
            return self.put_stream(fh)

    def put_directory(self, source: Path) -> tuple[str, int]:
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            archive = Path(tmp) / "tree.zip"
            zip_directory(source, archive)
            return self.put_file(archive)

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> tuple[str, int]:
        """Store bytes read from ``stream``, hashing on the way.

        Raises:
            PayloadTooLargeError: more than ``max_bytes`` were read; nothing is stored.
        """
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLargeError(
                            f"upload is larger than the limit of {max_bytes} bytes",
                            {"limit_bytes": max_bytes})
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            target = self._location(sha)
            if target.is_file():
                tmp.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, target)
            return sha, size
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def adopt(self, source: Path, sha256: str) -> None:
        """Move ``source``, a file on the store's file system whose sha256 the caller has
        just computed while writing it, into place (it is gone afterwards)."""
        target = self._location(sha256)
        if target.is_file():
            source.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(source, 0o444)
        os.replace(source, target)

    def get_file(self, sha256: str, target: Path) -> Path:
        """Copy a blob to ``target`` (:class:`~tinymlaas.artifacts.ArtifactStore`)."""
        return self.export(sha256, target)

    def export(self, sha256: str, target: Path) -> Path:
        """Copy a blob out of the store."""
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(sha256), target)
        return target

    def delete(self, sha256: str) -> int:
        """Remove a blob (its metadata row is gone); returns the bytes freed, 0 if absent."""
        path = self._location(sha256)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def unpack(self, sha256: str, target: Path) -> Path:
        """Extract a directory-shaped blob (written by ``put_directory``)."""
        with zipfile.ZipFile(self.path(sha256)) as archive:
            archive.extractall(target)
        return target

    def _location(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise NotFoundError(f"{sha256!r} is not an artifact address")
        return self.root / sha256[:2] / sha256
