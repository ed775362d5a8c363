"""A site's datasets: files under the worker's data root whose bytes never leave the site.

Registering ``site://NAME/path`` sends a :class:`~tinymlaas.contracts.jobs.DescribeJob` to
the site: its worker reads the file, turns it into the canonical arrays (with the options
given at registration), keeps that artifact in its own cache and reports only what the
server needs to plan runs (sizes, shapes, classes, sha256s). A step that reads the dataset
runs at the same site; its worker takes the artifact from its cache, or makes it again from
the file, and refuses a file whose arrays no longer give the registered sha256.

A path is relative to the data root and must stay under it once links are resolved.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from tinymlaas.artifacts.local import LocalArtifactStore, sha256_file
from tinymlaas.config import Settings
from tinymlaas.contracts.jobs import SiteData
from tinymlaas.domain import Task
from tinymlaas.errors import InvalidInputError, NotFoundError

__all__ = ["describe", "materialize", "resolve"]


def resolve(data_root: Path, relative: str) -> Path:
    """The file ``relative`` names under ``data_root``.

    Raises:
        InvalidInputError: the path leads outside the data root (``..``, an absolute path,
            a link pointing out).
        NotFoundError: no such file.
    """
    root = data_root.resolve()
    path = (root / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(root) or path == root:
        raise InvalidInputError(f"{relative!r} leads outside the site's data root")
    if not path.is_file():
        raise NotFoundError(f"no file {relative!r} under the site's data root")
    return path


def _canonical(data_root: Path, data: SiteData, scratch: Path) -> tuple[Path, dict[str, Any]]:
    """The canonical .npz of the site's file, and what it holds."""
    from tinymlaas.formats import datasets as ds

    source = resolve(data_root, data.path)
    task = Task(data.task) if data.task else None
    limit = {name: Settings.model_fields[name].default  # the site's own data: the defaults
             for name in ("max_dataset_bytes", "max_archive_entries", "max_archive_ratio",
                          "max_classes")}
    loaded = ds.load_dataset_file(
        source, task=task, label_column=data.label_column, image_size=data.image_size,
        max_bytes=limit["max_dataset_bytes"], max_entries=limit["max_archive_entries"],
        max_ratio=limit["max_archive_ratio"], max_classes=limit["max_classes"])
    if task is not None:
        loaded.task = task
    canonical = ds.write_canonical(loaded, scratch / "dataset.npz")
    fields = ds.canonical_fields(canonical)
    return canonical, {
        "sha256": sha256_file(canonical), "size": canonical.stat().st_size,
        "source_sha256": sha256_file(source), "source_bytes": source.stat().st_size,
        "source_format": loaded.source_format, "task": loaded.task.value,
        "num_samples": len(loaded.X), "feature_shape": list(loaded.X.shape[1:]),
        "num_classes": loaded.num_classes, "class_names": loaded.class_names,
        "fields": None if fields is None else {
            name: [dtype.str, list(shape)] for name, (dtype, shape) in fields.items()}}


def describe(data_root: Path, data: SiteData, cache: LocalArtifactStore,
             work_dir: Path) -> dict[str, Any]:
    """Read the file, keep its canonical artifact in ``cache`` and say what it holds."""
    work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="describe-", dir=work_dir))
    try:
        canonical, description = _canonical(data_root, data, scratch)
        cache.adopt(canonical, description["sha256"])
        return description
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def materialize(data_root: Path, data: SiteData, sha256: str, cache: LocalArtifactStore,
                work_dir: Path) -> None:
    """Make sure ``cache`` holds the dataset's artifact ``sha256``, made from the file.

    Raises:
        InvalidInputError: the file's arrays no longer give ``sha256`` (it changed since it
            was registered).
    """
    if cache.exists(sha256):
        return
    description = describe(data_root, data, cache, work_dir)
    if description["sha256"] != sha256:
        raise InvalidInputError(
            f"the site's file {data.path!r} changed since the dataset was registered (its "
            f"arrays now give {description['sha256'][:12]}, registered {sha256[:12]}); "
            "register it again under a new name", {"path": data.path})
