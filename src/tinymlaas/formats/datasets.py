"""Datasets: load NPZ, CSV, a zip of image folders, or a built-in set, into one canonical NPZ.

The canonical form is ``X`` (float32, samples first) and ``y`` (int64 class indices for
classification, float32 otherwise), plus ``class_names``. Splits are a pure function of the
sample count and the split settings, so every worker sees the same ones.

Every file is hostile until checked, in bounded time and memory:

* ``X`` holds integers or floats, finite once in float32, with samples first, 1 to
  :data:`MAX_FEATURE_DIMS` feature dimensions of at least one element and at most
  :data:`MAX_SAMPLE_VALUES` values per sample.
* Class labels are whole numbers from 0, and the largest plus one (the class count) is at
  most ``max_classes`` (the ``TINYMLAAS_MAX_CLASSES`` setting); nothing is sized by a label
  before that is checked. Labels given as text (NPZ string arrays, CSV label columns) are
  class names: they map to indices in sorted order (or in the order of an NPZ's
  ``class_names``), so a text label always means classification.
* Regression targets are finite in float32.
* An NPZ's arrays are checked from their headers before they are read: no object arrays,
  declared sizes within the bytes actually there, and the unpacked total and compression
  ratio within the same caps as archives. CSV files stream row by row into compact arrays.
  Image zips are capped in class folders, pixels per image, output size and decoded bytes.

A model with several inputs (token ids, attention mask, ...) takes an NPZ with one array per
input, named after it, instead of ``X`` (``y`` optional). Its canonical ``X`` is a structured
array with one field per input; integer arrays stay integers (int64). Without ``y`` the
dataset is unlabelled (task ``embedding``: evaluation reports fidelity to the original model).
"""

from __future__ import annotations

import csv
import math
import tempfile
import unicodedata
import zipfile
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tinymlaas.domain import DatasetSplits, Task, TensorSpec
from tinymlaas.errors import InvalidInputError, PayloadTooLargeError, UnsafeInputError
from tinymlaas.formats.archives import safe_extract_zip

__all__ = [
    "BUILTIN_DATASETS",
    "MAX_CLASS_NAME_CHARS",
    "MAX_FEATURE_DIMS",
    "MAX_IMAGE_SIDE",
    "MAX_SAMPLE_VALUES",
    "LoadedDataset",
    "canonical_fields",
    "check_model_inputs",
    "finish_dataset",
    "load_builtin",
    "load_dataset_file",
    "read_canonical",
    "split_indices",
    "write_canonical",
]

BUILTIN_DATASETS = {"digits": "scikit-learn's 8x8 handwritten digits, 1797 images, 10 classes"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".webp"}

#: Feature dimensions after the sample dimension (so ``X`` has at most 8 dimensions).
MAX_FEATURE_DIMS = 7
#: Values in one sample (the product of the feature shape).
MAX_SAMPLE_VALUES = 2**26
#: Longest class name, in characters.
MAX_CLASS_NAME_CHARS = 256
#: Largest side of the images of a dataset (after resizing).
MAX_IMAGE_SIDE = 4096
#: Most pixels of one image file before decoding (larger ones are refused, not decoded).
_MAX_SOURCE_PIXELS = 8192 * 8192
#: Integer labels with at most this many distinct values mean classification when the task
#: is not given.
_INFERRED_CLASSES = 1000
_NPZ_ARRAYS = ("X", "y", "class_names")
#: Most named input arrays in one NPZ (a model with several inputs).
MAX_INPUT_ARRAYS = 32


@dataclass
class LoadedDataset:
    X: np.ndarray
    y: np.ndarray
    task: Task
    class_names: list[str]
    source_format: Literal["npz", "csv", "image-zip", "builtin", "text"]

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.task is Task.classification else None


def _show(value: Any) -> str:
    """A number for a message: whole numbers in full when short, else in %g form."""
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return f"{number:g}"


def _features(X: np.ndarray) -> np.ndarray:
    """``X`` as float32 after checking its type, shape and values."""
    if X.dtype.kind == "b":
        X = X.astype(np.uint8)
    if X.dtype.kind not in "iuf":
        raise InvalidInputError(f"X must hold numbers (integers or floats); it holds "
                                f"{X.dtype}", {"dtype": str(X.dtype)})
    if not 2 <= X.ndim <= MAX_FEATURE_DIMS + 1:
        raise InvalidInputError(f"X must have samples first and 1 to {MAX_FEATURE_DIMS} "
                                f"feature dimensions; got shape {tuple(X.shape)}",
                                {"shape": list(X.shape)})
    if len(X) == 0 or 0 in X.shape[1:]:
        raise InvalidInputError(f"X must hold at least one sample of at least one value; got "
                                f"shape {tuple(X.shape)}", {"shape": list(X.shape)})
    per_sample = math.prod(X.shape[1:])
    if per_sample > MAX_SAMPLE_VALUES:
        raise InvalidInputError(f"one sample of X holds {per_sample} values; the limit is "
                                f"{MAX_SAMPLE_VALUES}", {"shape": list(X.shape)})
    with np.errstate(over="ignore"):  # beyond float32 becomes infinity, refused below
        X = X.astype(np.float32, copy=False)
    if not np.isfinite(X).all():
        raise InvalidInputError("X must be finite: no NaN or infinity, and every value within "
                                "float32 range")
    return X


def _check_names(names: list[str], max_classes: int) -> list[str]:
    if len(names) > max_classes:
        raise InvalidInputError(f"the dataset has {len(names)} classes; the limit is "
                                f"{max_classes} (the TINYMLAAS_MAX_CLASSES setting)",
                                {"classes": len(names), "max_classes": max_classes})
    for name in names:
        if len(name) > MAX_CLASS_NAME_CHARS or any(
                unicodedata.category(c) in {"Cc", "Cs"} for c in name):
            raise InvalidInputError(f"class name {name[:40]!r} is not allowed: class names are "
                                    f"text of at most {MAX_CLASS_NAME_CHARS} characters "
                                    "without control characters")
    return names


def _text_labels(y: np.ndarray, names: list[str] | None,
                 max_classes: int) -> tuple[np.ndarray, list[str]]:
    """Class indices and names from labels given as text (class names)."""
    if y.ndim != 1:
        raise InvalidInputError(f"class labels must be one per sample (a 1-D y); got shape "
                                f"{tuple(y.shape)}")
    if y.dtype.kind == "S":
        try:
            y = np.char.decode(y, "utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError("text labels must be UTF-8") from None
    labels, inverse = np.unique(y, return_inverse=True)
    if len(labels) > max_classes:
        raise InvalidInputError(f"y holds {len(labels)} different class names; the limit is "
                                f"{max_classes} (the TINYMLAAS_MAX_CLASSES setting)",
                                {"classes": len(labels), "max_classes": max_classes})
    found = [str(label) for label in labels]
    if names is None:
        return inverse.astype(np.int64).reshape(-1), _check_names(found, max_classes)
    position = {name: i for i, name in enumerate(names)}
    unknown = [label for label in found if label not in position]
    if unknown:
        raise InvalidInputError(f"label {unknown[0][:40]!r} is not one of class_names",
                                {"unknown": [u[:40] for u in unknown[:10]]})
    order = np.array([position[label] for label in found], dtype=np.int64)
    return order[inverse.reshape(-1)], names


def _class_indices(y: np.ndarray, names: list[str] | None, max_classes: int) -> np.ndarray:
    """Numeric class labels as int64 indices, checked before anything is sized by them."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InvalidInputError(f"class labels must be one per sample (a 1-D y); got shape "
                                f"{tuple(y.shape)}")
    if y.dtype.kind == "f" and not np.array_equal(y, np.floor(y)):
        raise InvalidInputError("class labels must be whole numbers (0, 1, 2, ...); for "
                                "continuous targets use task=regression")
    low, high = y.min(), y.max()
    if low < 0:
        raise InvalidInputError(f"class labels must be non-negative integers (0, 1, 2, ...); "
                                f"found {_show(low)}")
    limit = len(names) if names is not None else max_classes
    if high >= limit:
        if names is not None:
            raise InvalidInputError(f"class label {_show(high)} has no class name: "
                                    f"class_names has {len(names)} entries")
        raise InvalidInputError(
            f"the largest class label is {_show(high)}, which means {_show(float(high) + 1)} "
            f"classes; the limit is {max_classes} (the TINYMLAAS_MAX_CLASSES setting). Labels "
            "are class indices 0, 1, 2, ...; for continuous targets use task=regression",
            {"largest_label": _show(high), "max_classes": max_classes})
    return y.astype(np.int64)


def _finish(X: np.ndarray, y: np.ndarray, task: Task | None, names: list[str] | None,
            source: Literal["npz", "csv", "image-zip", "builtin", "text"], *,
            max_classes: int, named_inputs: bool = False) -> LoadedDataset:
    # the arrays of a model's inputs (a structured X) are checked by _input_arrays
    X = X if named_inputs else _features(np.asarray(X))
    y = np.asarray(y)
    if y.ndim == 0 or y.ndim > MAX_FEATURE_DIMS + 1:
        raise InvalidInputError(f"y must have samples first; got shape {tuple(y.shape)}")
    if len(X) != len(y):
        raise InvalidInputError(f"X has {len(X)} samples but y has {len(y)}")
    if names is not None:
        names = _check_names(names, max_classes)
    if y.dtype.kind in "US":
        if task not in (None, Task.classification):
            raise InvalidInputError(f"y holds text, which are class names; a {task.value} "
                                    "dataset needs numeric targets")
        indices, names = _text_labels(y, names, max_classes)
        return LoadedDataset(X=X, y=indices, task=Task.classification, class_names=names,
                             source_format=source)
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuf":
        raise InvalidInputError(f"y must hold numbers (class indices 0, 1, 2, ... or "
                                f"regression targets) or class names as text; it holds "
                                f"{y.dtype}", {"dtype": str(y.dtype)})
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise InvalidInputError("labels must be finite numbers (no NaN or infinity)")
    if task is None:
        integral = y.dtype.kind in "iu" or np.array_equal(y, np.floor(y))
        task = Task.classification if integral and y.ndim == 1 and \
            len(np.unique(y)) <= _INFERRED_CLASSES else Task.regression
    if task is Task.classification:
        y = _class_indices(y, names, max_classes)
        if names is None:
            names = [str(i) for i in range(int(y.max()) + 1)]
    else:
        with np.errstate(over="ignore"):
            y = y.astype(np.float32)
        if not np.isfinite(y).all():
            raise InvalidInputError("regression targets must be within float32 range")
        names = []
    return LoadedDataset(X=X, y=y, task=task, class_names=names, source_format=source)


#: Labels and task checked and normalized for arrays already loaded (text datasets use it).
finish_dataset = _finish


def load_builtin(name: str) -> LoadedDataset:
    if name != "digits":
        raise InvalidInputError(f"unknown built-in dataset {name!r}; known: "
                                f"{', '.join(BUILTIN_DATASETS)}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return _finish(X, digits.target, Task.classification, [str(i) for i in range(10)], "builtin",
                   max_classes=10)


def _check_npz(path: Path, *, max_bytes: int, max_ratio: float) -> None:
    """Check an NPZ's arrays from its directory and headers, before any is read."""
    from numpy.lib import format as npy

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInputError(f"{path.name} is not a readable NPZ file: {exc}") from exc
    with zf:
        members = {info.filename: info for info in zf.infolist()}
        total = sum(info.file_size for info in members.values())
        packed = max(1, sum(info.compress_size for info in members.values()))
        if total > max_bytes:
            raise PayloadTooLargeError(f"{path.name} unpacks to {total} bytes; the limit is "
                                       f"{max_bytes}", {"limit_bytes": max_bytes})
        if total / packed > max_ratio:
            raise PayloadTooLargeError(f"{path.name} compression ratio {total / packed:.0f}:1 "
                                       f"exceeds {max_ratio:.0f}:1 (possible zip bomb)")
        if len(members) > MAX_INPUT_ARRAYS + len(_NPZ_ARRAYS):
            raise InvalidInputError(f"{path.name} holds {len(members)} arrays; the limit is "
                                    f"{MAX_INPUT_ARRAYS} inputs besides y and class_names")
        for name, info in members.items():
            key = name.removesuffix(".npy")
            with zf.open(info) as fh:
                version = npy.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = npy.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, _, dtype = npy.read_array_header_2_0(fh)
                else:
                    raise InvalidInputError(f"{path.name}: array {key} uses .npy format "
                                            f"version {version}; save it with numpy.savez")
            if dtype.hasobject:
                raise UnsafeInputError(f"{path.name} holds pickled objects in array {key}, "
                                       "which are refused; save plain numeric arrays")
            declared = math.prod(shape) * dtype.itemsize
            if declared > info.file_size:
                raise InvalidInputError(f"{path.name}: array {key} declares shape "
                                        f"{tuple(shape)} ({declared} bytes) but holds only "
                                        f"{info.file_size} bytes")


def _input_arrays(path: Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """One structured values (a field per model input) from arrays named after the inputs."""
    fields = []
    samples = None
    per_sample = 0
    for name, values in arrays.items():
        if not name or len(name) > 200 or not name.isprintable():
            raise InvalidInputError(f"{path.name}: values name {name[:40]!r} is not an input "
                                    "name (printable, at most 200 characters)")
        if values.dtype.kind not in "iufb":
            raise InvalidInputError(f"{path.name}: input values {name!r} must hold numbers; it "
                                    f"holds {values.dtype}", {"input": name})
        if not 1 <= values.ndim <= MAX_FEATURE_DIMS + 1 or len(values) == 0:
            raise InvalidInputError(f"{path.name}: input values {name!r} must have samples "
                                    f"first; got shape {tuple(values.shape)}", {"input": name})
        if samples is not None and len(values) != samples:
            raise InvalidInputError(f"{path.name}: input values {name!r} has {len(values)} "
                                    f"samples but the others have {samples}", {"input": name})
        samples = len(values)
        per_sample += math.prod(values.shape[1:])
        if values.dtype.kind == "f":
            with np.errstate(over="ignore"):
                values = values.astype(np.float32)
            if not np.isfinite(values).all():
                raise InvalidInputError(f"{path.name}: input values {name!r} must be finite in "
                                        "float32", {"input": name})
        else:
            if values.dtype == np.uint64 and values.max() > np.iinfo(np.int64).max:
                raise InvalidInputError(f"{path.name}: input values {name!r} holds integers "
                                        "beyond int64", {"input": name})
            values = values.astype(np.int64)
        fields.append((name, values))
    if per_sample > MAX_SAMPLE_VALUES:
        raise InvalidInputError(f"one sample holds {per_sample} values; the limit is "
                                f"{MAX_SAMPLE_VALUES}")
    X = np.empty(samples or 0, dtype=[(n, a.dtype, a.shape[1:]) for n, a in fields])
    for name, values in fields:
        X[name] = values
    return X


def _load_npz(path: Path, task: Task | None, *, max_bytes: int, max_ratio: float,
              max_classes: int) -> LoadedDataset:
    try:
        _check_npz(path, max_bytes=max_bytes, max_ratio=max_ratio)
        with np.load(path, allow_pickle=False) as data:
            inputs = [k for k in data.files if k not in _NPZ_ARRAYS]
            named = "X" not in data.files and len(inputs) >= 2  # one array per model input
            missing = {"y"} - set(data.files) if named else {"X", "y"} - set(data.files)
            if missing and not named:
                raise InvalidInputError(f"{path.name} lacks array(s) {sorted(missing)}; an NPZ "
                                        "dataset holds X (features) and y (labels), or for a "
                                        "model with several inputs one array per input, "
                                        "named after it (y optional)")
            X = _input_arrays(path, {k: data[k] for k in inputs}) if named else data["X"]
            if missing:
                if task not in (None, Task.embedding, Task.generic):
                    raise InvalidInputError(f"{path.name} has no labels (y); a {task.value} "
                                            "dataset needs them")
                return LoadedDataset(X=X, y=np.zeros(len(X), np.float32),
                                     task=task or Task.embedding,
                                     class_names=[], source_format="npz")
            y = data["y"]
            raw_names = data["class_names"] if "class_names" in data.files else None
    except (InvalidInputError, PayloadTooLargeError):
        raise
    except (ValueError, OSError, EOFError, KeyError, RuntimeError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as exc:  # RuntimeError: an encrypted member
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(f"{path.name} is not a readable NPZ file: {first}") from exc
    names = None
    if raw_names is not None:
        if raw_names.ndim != 1 or raw_names.dtype.kind not in "USiu":
            raise InvalidInputError(f"{path.name}: class_names must be a 1-D array of text")
        try:
            names = [n.decode("utf-8") if isinstance(n, bytes) else str(n)
                     for n in raw_names.tolist()]
        except UnicodeDecodeError:
            raise InvalidInputError(f"{path.name}: class_names must be UTF-8 text") from None
    return _finish(X, y, task, names, "npz", max_classes=max_classes, named_inputs=named)


def _load_csv(path: Path, label_column: str | None, task: Task | None, *,
              max_classes: int) -> LoadedDataset:
    """Stream rows into compact arrays: features as float32, labels as float64 while they
    are all numbers, else as indices of (at most ``max_classes``) class names."""
    features = array("f")
    numbers: array | None = array("d")
    index_of: dict[str, int] = {}
    indices: array | None = array("q")
    rows = 0
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise InvalidInputError(f"{path.name} needs a header row and at least one "
                                        "data row")
            label = label_column or header[-1]
            if label not in header:
                shown = ", ".join(h[:40] for h in header[:50])
                raise InvalidInputError(f"label column {label[:100]!r} is not in {path.name}; "
                                        f"columns: {shown}")
            col = header.index(label)
            width = len(header)
            for row in reader:
                if not row:
                    continue  # blank line
                if len(row) != width:
                    raise InvalidInputError(f"{path.name} line {reader.line_num} has "
                                            f"{len(row)} fields; the header has {width}")
                raw = row.pop(col)
                try:
                    features.extend(float(v) for v in row)
                except ValueError as exc:
                    raise InvalidInputError(f"{path.name} line {reader.line_num}: every "
                                            f"feature must be a number ({exc})") from None
                if numbers is not None:
                    try:
                        numbers.append(float(raw))
                    except ValueError:
                        numbers = None
                if indices is not None:
                    if raw not in index_of and len(index_of) >= max_classes:
                        indices = None  # more names than classes allowed: numbers only
                    else:
                        indices.append(index_of.setdefault(raw, len(index_of)))
                if numbers is None and indices is None:
                    raise InvalidInputError(
                        f"{path.name}: the label column {label[:100]!r} holds more than "
                        f"{max_classes} different class names; the limit is {max_classes} "
                        "(the TINYMLAAS_MAX_CLASSES setting)", {"max_classes": max_classes})
                rows += 1
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path.name} is not UTF-8 text") from exc
    except csv.Error as exc:
        raise InvalidInputError(f"{path.name} is not a readable CSV file: {exc}") from exc
    if rows == 0:
        raise InvalidInputError(f"{path.name} needs a header row and at least one data row")
    X = np.frombuffer(features, dtype=np.float32).reshape(rows, width - 1)
    if numbers is not None:
        return _finish(X, np.frombuffer(numbers, dtype=np.float64), task, None, "csv",
                       max_classes=max_classes)
    assert indices is not None
    if task not in (None, Task.classification):
        raise InvalidInputError(f"{path.name}: the label column holds text, which are class "
                                f"names; a {task.value} dataset needs numeric targets")
    found = list(index_of)
    names = sorted(found)
    rank = {name: i for i, name in enumerate(names)}
    remap = np.array([rank[name] for name in found], dtype=np.int64)
    y = remap[np.frombuffer(indices, dtype=np.int64)]
    return _finish(X, y, Task.classification, names, "csv", max_classes=max_classes)


def _load_image_zip(path: Path, image_size: tuple[int, int] | None, *, max_entries: int,
                    max_bytes: int, max_ratio: float, max_classes: int) -> LoadedDataset:
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
        if len(classes) > max_classes:
            raise InvalidInputError(f"the zip has {len(classes)} class folders; the limit is "
                                    f"{max_classes} (the TINYMLAAS_MAX_CLASSES setting)",
                                    {"classes": len(classes), "max_classes": max_classes})
        _check_names(classes, max_classes)
        images, labels = [], []
        mode = None
        decoded = 0
        for label, name in enumerate(classes):
            for file in sorted((root / name).rglob("*")):
                if file.suffix.lower() not in _IMAGE_SUFFIXES or not file.is_file():
                    continue
                where = file.relative_to(root)
                try:
                    with Image.open(file) as img:
                        if img.width * img.height > _MAX_SOURCE_PIXELS:
                            raise InvalidInputError(
                                f"{where} is {img.width}x{img.height} pixels; images may "
                                f"have at most {_MAX_SOURCE_PIXELS} pixels")
                        mode = mode or ("L" if img.mode in {"L", "1", "I", "I;16"} else "RGB")
                        size = image_size or (img.width, img.height)
                        if max(size) > MAX_IMAGE_SIDE:
                            raise InvalidInputError(
                                f"{where} is {size[0]}x{size[1]} pixels; give an image size "
                                f"of at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} to resize to")
                        decoded += size[0] * size[1] * (1 if mode == "L" else 3) * 4
                        if decoded > max_bytes:
                            raise PayloadTooLargeError(
                                f"the decoded images take more than {max_bytes} bytes; give "
                                "a smaller image size", {"limit_bytes": max_bytes})
                        img.load()
                        image_size = size
                        images.append(np.asarray(img.convert(mode).resize(size),
                                                 dtype=np.float32) / 255.0)
                except (InvalidInputError, PayloadTooLargeError):
                    raise
                except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
                    raise InvalidInputError(f"{where} is not a readable image: {exc}") from exc
                except Exception as exc:  # decoders raise all sorts on malformed files
                    raise InvalidInputError(f"{where} is not a readable image "
                                            f"({type(exc).__name__})") from exc
                labels.append(label)
        if not images:
            raise InvalidInputError("the zip holds no images (png, jpg, bmp, gif, pgm, webp)")
    X = np.stack(images)
    X = X[:, None, :, :] if X.ndim == 3 else X.transpose(0, 3, 1, 2)
    return _finish(X, np.array(labels), Task.classification, classes, "image-zip",
                   max_classes=max_classes)


def load_dataset_file(path: Path, *, task: Task | None = None, label_column: str | None = None,
                      image_size: tuple[int, int] | None = None, max_bytes: int,
                      max_entries: int, max_ratio: float, max_classes: int) -> LoadedDataset:
    """Load a user's dataset file into canonical arrays, validating everything.

    Raises:
        PayloadTooLargeError: over ``max_bytes`` (the file, or unpacked).
        UnsafeInputError: pickles, unsafe archive entries.
        InvalidInputError: anything else wrong with the file, its features or labels.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise PayloadTooLargeError(f"{path.name} is {size} bytes; the limit is {max_bytes}")
    if image_size is not None and not all(1 <= side <= MAX_IMAGE_SIDE for side in image_size):
        raise InvalidInputError(f"image size {image_size[0]}x{image_size[1]} is out of range; "
                                f"each side is 1 to {MAX_IMAGE_SIDE} pixels")
    suffix = path.suffix.lower()
    if suffix in {".pkl", ".pickle", ".joblib"}:
        raise UnsafeInputError(f"{path.name} is a pickle file, which is refused; use NPZ, CSV "
                               "or a zip of image folders")
    if suffix == ".npz":
        return _load_npz(path, task, max_bytes=max_bytes, max_ratio=max_ratio,
                         max_classes=max_classes)
    if suffix in {".csv", ".tsv", ".txt"}:
        return _load_csv(path, label_column, task, max_classes=max_classes)
    if suffix in {".jsonl", ".ndjson"}:
        raise InvalidInputError(f"{path.name} is text: give the model whose tokenizer "
                                "tokenizes it (--tokenizer MODEL, or tokenizer=MODEL in the API)")
    if suffix == ".zip":
        return _load_image_zip(path, image_size, max_entries=max_entries, max_bytes=max_bytes,
                               max_ratio=max_ratio, max_classes=max_classes)
    raise InvalidInputError(f"{path.name}: unknown dataset format; use .npz (X, y), .csv "
                            f"(features + label column), a .zip of image folders, or a "
                            f"built-in ({', '.join(BUILTIN_DATASETS)})")


def write_canonical(data: LoadedDataset, target: Path) -> Path:
    """The canonical .npz of ``data``: the same arrays always give the same bytes (fixed
    entry times, no compression), so a site's workers can make a dataset's artifact again
    and check it against the sha256 it was registered with."""
    from numpy.lib import format as npy

    arrays = {"X": data.X, "y": data.y,
              "class_names": np.array(data.class_names, dtype=str)}
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, values in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            with zf.open(entry, "w", force_zip64=True) as fh:
                npy.write_array(fh, np.asanyarray(values), allow_pickle=False)
    return target


def read_canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return data["X"], data["y"]


def canonical_fields(path: Path) -> dict[str, tuple[np.dtype, tuple[int, ...]]] | None:
    """The inputs of a canonical dataset (name: dtype and per-sample shape), read from the
    header of its ``X``; None for a single-array ``X``."""
    from numpy.lib import format as npy

    with zipfile.ZipFile(path) as zf, zf.open("X.npy") as fh:
        version = npy.read_magic(fh)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        _, _, dtype = read(fh)
    if dtype.names is None:
        return None
    return {name: (dtype[name].base, dtype[name].shape) for name in dtype.names}


def check_model_inputs(inputs: list[TensorSpec], path: Path) -> None:
    """Refuse a canonical dataset that cannot feed every model input.

    Raises:
        InvalidInputError: an input without an array, or float data for an integer input.
    """
    check_input_fields(inputs, canonical_fields(path))


def check_input_fields(inputs: list[TensorSpec],
                       fields: dict[str, tuple[Any, Any]] | None) -> None:
    """:func:`check_model_inputs` on a dataset's arrays as :func:`canonical_fields` gives
    them, or as a site reported them (dtype strings); None: a single array ``X``."""
    if fields is None:
        if len(inputs) > 1:
            raise InvalidInputError(
                f"the model takes {len(inputs)} inputs ({', '.join(s.name for s in inputs)}) "
                "but the dataset holds one array X; register an NPZ with one array per input, "
                "named after it", {"inputs": [s.name for s in inputs]})
        return
    for spec in inputs:
        if spec.name not in fields:
            raise InvalidInputError(f"the dataset has no array for model input {spec.name!r}; "
                                    f"it holds {', '.join(fields)}",
                                    {"input": spec.name, "arrays": list(fields)})
        wanted = np.dtype(spec.dtype).kind if spec.dtype != "unknown" else "f"
        if wanted in "iub" and np.dtype(fields[spec.name][0]).kind == "f":
            raise InvalidInputError(f"model input {spec.name!r} takes {spec.dtype} but the "
                                    "dataset's array holds floats; give integers",
                                    {"input": spec.name})


def split_indices(num_samples: int, splits: DatasetSplits) -> dict[str, np.ndarray]:
    """Deterministic ``train``, ``test`` and ``calibration`` (a subset of train) indices,
    and the test split in two halves, ``validation`` and ``holdout``, by a second seeded
    permutation: ``optimize`` selects candidates on one and reports the chosen one's
    figures on the other, which the selection never saw. A test split of one sample cannot
    be halved; both halves are then that sample."""
    order = np.random.default_rng(splits.seed).permutation(num_samples)
    n_test = max(1, round(num_samples * splits.test_fraction))
    test, train = np.sort(order[:n_test]), order[n_test:]
    halves = np.random.default_rng(splits.seed + 1).permutation(test)
    n_validation = (len(test) + 1) // 2
    validation, holdout = halves[:n_validation], halves[n_validation:]
    if len(holdout) == 0:
        holdout = validation
    return {"train": np.sort(train), "test": test,
            "calibration": np.sort(train[: splits.calibration_size]),
            "validation": np.sort(validation), "holdout": np.sort(holdout)}
