"""A/B slots: what is installed where, the atomic switch, and safe unpacking.

A slot is written whole before anything points to it: into ``slots/<x>.partial``, each file
fsynced, then renamed to ``slots/<x>``. Its layout::

    slots/x/manifest.json     the signed manifest envelope of the release
    slots/x/release/<name>    every file of the release, as downloaded and verified
    slots/x/content/          the package unpacked (a wheel's import package lives here)

``current`` is a relative symlink to ``slots/x``. Switching makes ``current.new`` and
renames it over ``current`` (``os.replace`` of a symlink is atomic on POSIX), so at every
instant ``current`` is the old slot or the new one.

Archives are hostile input: no absolute paths, ``..``, backslashes, symlinks or devices;
caps on the entry count, the unpacked size and the compression ratio; each file's bytes
are counted as they are written, so a lying header cannot go past the caps.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from tinymlaas.agent.store import Layout, fsync_dir
from tinymlaas.agent.verify import VerifiedRelease, sha256_file
from tinymlaas.errors import PayloadTooLargeError, UnsafeInputError

__all__ = ["MAX_ENTRIES", "MAX_RATIO", "MAX_UNPACKED_BYTES", "current_slot", "discard_slot",
           "install_slot", "other_slot", "point_current", "slot_intact", "unpack_zip",
           "wheel_import_name"]

MAX_ENTRIES = 4096
MAX_UNPACKED_BYTES = 2 * 1024**3
#: Unpacked over packed size, for entries over 1 MiB (zip bombs).
MAX_RATIO = 200
#: Package kinds whose file is a zip to unpack into ``content/``.
ZIP_KINDS = frozenset({"python-wheel", "c-bundle", "docker-context"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


def other_slot(slot: str | None) -> str:
    """The slot to install into when ``slot`` is in use."""
    return "b" if slot == "a" else "a"


def current_slot(layout: Layout) -> str | None:
    """The slot ``current`` points to, or None when it does not exist (or is not ours)."""
    try:
        target = os.readlink(layout.current)
    except (FileNotFoundError, OSError):
        return None
    name = PurePosixPath(target).name
    return name if name in ("a", "b") and target == f"slots/{name}" else None


def point_current(layout: Layout, slot: str | None,
                  before_replace: Callable[[], None] | None = None) -> None:
    """Make ``current`` point to ``slots/<slot>`` atomically (or remove it for None)."""
    if layout.current_new.is_symlink() or layout.current_new.exists():
        layout.current_new.unlink()
    if slot is None:
        if layout.current.is_symlink() or layout.current.exists():
            layout.current.unlink()
            fsync_dir(layout.root)
        return
    os.symlink(f"slots/{slot}", layout.current_new)
    if before_replace is not None:
        before_replace()
    os.replace(layout.current_new, layout.current)
    fsync_dir(layout.root)


def discard_slot(layout: Layout, slot: str) -> None:
    """Remove a slot and its half-written copy (never the one ``current`` points to)."""
    for path in (layout.slot(slot), layout.slots / f"{slot}.partial"):
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unpack_zip(archive: Path, dest: Path, *, max_entries: int = MAX_ENTRIES,
               max_bytes: int = MAX_UNPACKED_BYTES) -> list[str]:
    """Unpack a zip into the empty folder ``dest``; the names of the files written.

    Raises:
        UnsafeInputError: not a zip, or an entry that leaves ``dest``, a link or device,
            or a compression ratio of a zip bomb.
        PayloadTooLargeError: more entries or bytes than the caps.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeInputError(f"{archive.name} is not a zip archive ({exc})") from None
    written: list[str] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise PayloadTooLargeError(f"{archive.name} has {len(infos)} entries, more than "
                                       f"{max_entries}")
        declared = 0
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name).parts
            if not name or name.startswith("/") or "\\" in name or ".." in parts or \
                    re.match(r"^[A-Za-z]:", name) or "\x00" in name:
                raise UnsafeInputError(f"{archive.name} holds an unsafe path {name!r}")
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type (a plain file)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeInputError(f"{archive.name} holds a link or special file {name!r}")
            declared += info.file_size
            if info.file_size > (1 << 20) and \
                    info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise UnsafeInputError(f"{archive.name}: {name!r} expands more than "
                                       f"{MAX_RATIO} times (a zip bomb?)")
        if declared > max_bytes:
            raise PayloadTooLargeError(f"{archive.name} unpacks to more than {max_bytes} bytes")
        total = 0
        for info in infos:
            target = dest.joinpath(*PurePosixPath(info.filename).parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source, target.open("xb") as out:
                for block in iter(lambda s=source: s.read(1 << 20), b""):
                    total += len(block)
                    if total > max_bytes:
                        raise PayloadTooLargeError(f"{archive.name} unpacks to more than "
                                                   f"{max_bytes} bytes")
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            written.append(info.filename)
    return written


def wheel_import_name(content: Path) -> str:
    """The import package of an unpacked wheel (its ``top_level.txt``, which must name a
    package with an ``__init__.py``).

    Raises:
        UnsafeInputError: no single dist-info, or no such package.
    """
    tops = sorted(content.glob("*.dist-info/top_level.txt"))
    if len(tops) != 1:
        raise UnsafeInputError("the wheel has no single .dist-info/top_level.txt")
    names = [line.strip() for line in tops[0].read_text("utf-8").splitlines() if line.strip()]
    if len(names) != 1 or not _IDENT.fullmatch(names[0]) or \
            not (content / names[0] / "__init__.py").is_file():
        raise UnsafeInputError("the wheel does not hold one import package with an "
                               "__init__.py (give a wheel made by package-python)")
    return names[0]


def install_slot(layout: Layout, slot: str, release: VerifiedRelease,
                 files: dict[str, Path]) -> str | None:
    """Write ``slots/<slot>`` whole from verified downloads; the wheel's import name.

    Args:
        files: Every file of the release by name (downloaded and verified).

    Raises:
        UnsafeInputError, PayloadTooLargeError: an archive that may not be unpacked.
    """
    discard_slot(layout, slot)
    partial = layout.slots / f"{slot}.partial"
    (partial / "release").mkdir(parents=True)
    (partial / "content").mkdir()
    (partial / "manifest.json").write_bytes(release.manifest_bytes)
    _fsync_file(partial / "manifest.json")
    for name, source in files.items():
        target = partial / "release" / name
        shutil.copyfile(source, target)
        _fsync_file(target)
    package = release.manifest.package
    import_name = None
    if package.kind in ZIP_KINDS:
        unpack_zip(partial / "release" / package.name, partial / "content")
        if package.kind == "python-wheel":
            import_name = wheel_import_name(partial / "content")
    for folder in (partial / "release", partial / "content", partial):
        fsync_dir(folder)
    os.replace(partial, layout.slot(slot))
    fsync_dir(layout.slots)
    return import_name


def slot_intact(layout: Layout, slot: str, expected: dict[str, str]) -> list[str]:
    """The problems of a slot whose release files should hash as ``expected`` (name ->
    sha256); empty when it is complete."""
    problems = []
    folder = layout.slot(slot)
    if not (folder / "manifest.json").is_file():
        problems.append("no manifest.json")
    for name, digest in expected.items():
        path = folder / "release" / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name} does not hash as the manifest says")
    return problems
