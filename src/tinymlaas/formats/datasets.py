"""Datasets: load NPZ, CSV, a zip of image folders, or a built-in set, into one canonical NPZ.

The canonical form is ``X`` (float32, samples first) and ``y`` (int64 class indices for
classification, float32 otherwise), plus ``class_names``. Splits are a pure function of the
sample count and the split settings, so every worker sees the same ones.
"""

from __future__ import annotations

import csv
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tinymlaas.domain import DatasetSplits, Task
from tinymlaas.errors import InvalidInputError, PayloadTooLargeError, UnsafeInputError
from tinymlaas.formats.archives import safe_extract_zip

__all__ = [
    "BUILTIN_DATASETS",
    "LoadedDataset",
    "load_builtin",
    "load_dataset_file",
    "read_canonical",
    "split_indices",
    "write_canonical",
]

BUILTIN_DATASETS = {"digits": "scikit-learn's 8x8 handwritten digits, 1797 images, 10 classes"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".webp"}


@dataclass
class LoadedDataset:
    X: np.ndarray
    y: np.ndarray
    task: Task
    class_names: list[str]
    source_format: Literal["npz", "csv", "image-zip", "builtin"]

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.task is Task.classification else None


def _finish(X: np.ndarray, y: np.ndarray, task: Task | None, names: list[str] | None,
            source: Literal["npz", "csv", "image-zip", "builtin"]) -> LoadedDataset:
    if X.ndim < 2 or len(X) == 0:
        raise InvalidInputError(f"X must have samples first and at least one feature; got "
                                f"shape {X.shape}")
    if len(X) != len(y):
        raise InvalidInputError(f"X has {len(X)} samples but y has {len(y)}")
    if not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X.astype(np.float64))):
        raise InvalidInputError("X must be numeric and finite (no NaN or infinity)")
    if task is None:
        integral = np.issubdtype(y.dtype, np.integer) or (
            np.issubdtype(y.dtype, np.number) and np.all(np.mod(y, 1) == 0))
        task = Task.classification if integral and len(np.unique(y)) <= 1000 and y.ndim == 1 \
            else Task.regression
    if task is Task.classification:
        if names is None:
            labels = np.unique(y)
            if labels.min() < 0:
                raise InvalidInputError("class labels must be non-negative integers")
            names = [str(i) for i in range(int(labels.max()) + 1)]
        y = y.astype(np.int64)
    else:
        y = y.astype(np.float32)
        names = []
    return LoadedDataset(X=X.astype(np.float32), y=y, task=task, class_names=names,
                         source_format=source)


def load_builtin(name: str) -> LoadedDataset:
    if name != "digits":
        raise InvalidInputError(f"unknown built-in dataset {name!r}; known: "
                                f"{', '.join(BUILTIN_DATASETS)}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return _finish(X, digits.target, Task.classification, [str(i) for i in range(10)], "builtin")


def _load_npz(path: Path, task: Task | None) -> LoadedDataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"X", "y"} - set(data.files)
            if missing:
                raise InvalidInputError(f"{path.name} lacks array(s) {sorted(missing)}; an NPZ "
                                        "dataset holds X (features) and y (labels)")
            X, y = data["X"], data["y"]
            names = [str(n) for n in data["class_names"]] if "class_names" in data.files else None
    except ValueError as exc:
        raise UnsafeInputError(f"{path.name} holds pickled objects, which are refused; save "
                               "plain numeric arrays") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"{path.name} is not a readable NPZ file: {exc}") from exc
    return _finish(X, y, task, names, "npz")


def _load_csv(path: Path, label_column: str | None, task: Task | None) -> LoadedDataset:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path.name} is not UTF-8 text") from exc
    if len(rows) < 2:
        raise InvalidInputError(f"{path.name} needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    label = label_column or header[-1]
    if label not in header:
        raise InvalidInputError(f"label column {label!r} is not in {path.name}; columns: "
                                f"{', '.join(header)}")
    col = header.index(label)
    try:
        X = np.array([[float(v) for i, v in enumerate(r) if i != col] for r in body],
                     dtype=np.float32)
    except ValueError as exc:
        raise InvalidInputError(f"{path.name}: every feature must be a number ({exc})") from exc
    raw = [r[col] for r in body]
    try:
        y = np.array([float(v) for v in raw])
        names = None
    except ValueError:
        names = sorted(set(raw))
        y = np.array([names.index(v) for v in raw])
        task = task or Task.classification
    return _finish(X, y, task, names, "csv")


def _load_image_zip(path: Path, image_size: tuple[int, int] | None, *, max_entries: int,
                    max_bytes: int, max_ratio: float) -> LoadedDataset:
    from PIL import Image, UnidentifiedImageError

    with tempfile.TemporaryDirectory() as tmp:
        root = safe_extract_zip(path, Path(tmp) / "data", max_entries=max_entries,
                                max_total_bytes=max_bytes, max_ratio=max_ratio)
        dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", "."))]
        if len(dirs) == 1 and not any(f.suffix.lower() in _IMAGE_SUFFIXES
                                      for f in dirs[0].iterdir()):
            root = dirs[0]  # a single wrapping folder
            dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))]
        classes = sorted(d.name for d in dirs)
        if len(classes) < 2:
            raise InvalidInputError("an image dataset zip needs one folder per class (at least "
                                    "two), each holding images")
        images, labels = [], []
        mode = None
        for label, name in enumerate(classes):
            for file in sorted((root / name).rglob("*")):
                if file.suffix.lower() not in _IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(file) as img:
                        img.load()
                        mode = mode or ("L" if img.mode in {"L", "1", "I", "I;16"} else "RGB")
                        size = image_size or (img.width, img.height)
                        image_size = size
                        images.append(np.asarray(img.convert(mode).resize(size),
                                                 dtype=np.float32) / 255.0)
                except (UnidentifiedImageError, OSError) as exc:
                    raise InvalidInputError(f"{file.relative_to(root)} is not a readable "
                                            f"image: {exc}") from exc
                labels.append(label)
        if not images:
            raise InvalidInputError("the zip holds no images (png, jpg, bmp, gif, pgm, webp)")
    X = np.stack(images)
    X = X[:, None, :, :] if X.ndim == 3 else X.transpose(0, 3, 1, 2)
    return _finish(X, np.array(labels), Task.classification, classes, "image-zip")


def load_dataset_file(path: Path, *, task: Task | None = None, label_column: str | None = None,
                      image_size: tuple[int, int] | None = None, max_bytes: int,
                      max_entries: int, max_ratio: float) -> LoadedDataset:
    """Load a user's dataset file into canonical arrays, validating everything."""
    size = path.stat().st_size
    if size > max_bytes:
        raise PayloadTooLargeError(f"{path.name} is {size} bytes; the limit is {max_bytes}")
    suffix = path.suffix.lower()
    if suffix in {".pkl", ".pickle", ".joblib"}:
        raise UnsafeInputError(f"{path.name} is a pickle file, which is refused; use NPZ, CSV "
                               "or a zip of image folders")
    if suffix == ".npz":
        return _load_npz(path, task)
    if suffix in {".csv", ".tsv", ".txt"}:
        return _load_csv(path, label_column, task)
    if suffix == ".zip":
        return _load_image_zip(path, image_size, max_entries=max_entries, max_bytes=max_bytes,
                               max_ratio=max_ratio)
    raise InvalidInputError(f"{path.name}: unknown dataset format; use .npz (X, y), .csv "
                            f"(features + label column), a .zip of image folders, or a "
                            f"built-in ({', '.join(BUILTIN_DATASETS)})")


def write_canonical(data: LoadedDataset, target: Path) -> Path:
    np.savez(target, X=data.X, y=data.y, class_names=np.array(data.class_names, dtype=str))
    return target


def read_canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return data["X"], data["y"]


def split_indices(num_samples: int, splits: DatasetSplits) -> dict[str, np.ndarray]:
    """Deterministic ``train``, ``test`` and ``calibration`` (a subset of train) indices."""
    order = np.random.default_rng(splits.seed).permutation(num_samples)
    n_test = max(1, round(num_samples * splits.test_fraction))
    test, train = np.sort(order[:n_test]), order[n_test:]
    return {"train": np.sort(train), "test": test,
            "calibration": np.sort(train[: splits.calibration_size])}
