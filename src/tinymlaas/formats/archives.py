"""Safe extraction of user-supplied zip archives.

Refuses absolute paths, ``..`` components, symlinks and other special entries, and caps the
entry count, the total unpacked size and the compression ratio (zip bombs), all checked from
the central directory before a byte is written, and again while streaming.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from tinymlaas.errors import PayloadTooLargeError, UnsafeInputError

__all__ = ["extract_package", "safe_extract_zip"]


def _check_member(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeInputError(f"archive entry {info.filename!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeInputError(f"archive entry {info.filename!r} escapes the archive with '..'")
    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver set no type
    if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeInputError(
            f"archive entry {info.filename!r} is a link or special file; only files are allowed")
    return path


def extract_package(archive: Path, target: Path) -> Path:
    """Unpack an exported package (a C bundle, a signed image, a build context) into
    ``target``, replacing an earlier export there. The archive came from a server, so it is
    extracted as safely as an upload, with caps that fit any real package."""
    if target.is_dir():
        shutil.rmtree(target)
    return safe_extract_zip(archive, target, max_entries=20_000, max_total_bytes=4 << 30,
                            max_ratio=1000.0)


def safe_extract_zip(archive: Path, target: Path, *, max_entries: int, max_total_bytes: int,
                     max_ratio: float) -> Path:
    """Extract ``archive`` into the new directory ``target`` or raise without leaving it.

    Raises:
        UnsafeInputError: not a zip, or an entry is unsafe.
        PayloadTooLargeError: a cap is exceeded.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeInputError(f"{archive.name} is not a readable zip archive: {exc}") from exc
    with zf:
        members = zf.infolist()
        if len(members) > max_entries:
            raise PayloadTooLargeError(
                f"archive has {len(members)} entries; the limit is {max_entries}")
        total = sum(m.file_size for m in members)
        packed = max(1, sum(m.compress_size for m in members))
        if total > max_total_bytes:
            raise PayloadTooLargeError(
                f"archive unpacks to {total} bytes; the limit is {max_total_bytes}")
        if total / packed > max_ratio:
            raise PayloadTooLargeError(
                f"archive compression ratio {total / packed:.0f}:1 exceeds {max_ratio:.0f}:1 "
                "(possible zip bomb)")
        paths = [(_check_member(m), m) for m in members]
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
        try:
            written = 0
            for rel, info in paths:
                dest = staging.joinpath(*rel.parts)
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, dest.open("wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_total_bytes:
                            raise PayloadTooLargeError(
                                f"archive unpacks to more than {max_total_bytes} bytes")
                        out.write(chunk)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target
