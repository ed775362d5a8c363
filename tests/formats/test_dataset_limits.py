"""Hostile dataset files: labels, features and sizes that once exhausted memory or time are
refused with a clear InvalidInputError before anything is sized by them."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy

from helpers import png_bytes, write_zip
from tinymlaas.domain import Task
from tinymlaas.errors import InvalidInputError, PayloadTooLargeError, UnsafeInputError
from tinymlaas.formats.datasets import load_dataset_file

CAPS = {"max_bytes": 50 * 2**20, "max_entries": 1000, "max_ratio": 100.0,
        "max_classes": 10_000}


def load(path: Path, **kw):
    return load_dataset_file(path, **{**CAPS, **kw})


def npz(tmp_path: Path, name: str = "d.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


X4 = np.ones((4, 3), np.float32)


# labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [2**31, 2**62, 1e30, 10_000])
def test_a_huge_class_label_is_refused_not_allocated(tmp_path: Path, label: float) -> None:
    y = np.array([0, 1, 2, label])
    with pytest.raises(InvalidInputError, match="the limit is 10000") as info:
        load(npz(tmp_path, X=X4, y=y))
    assert "TINYMLAAS_MAX_CLASSES" in info.value.message
    assert info.value.details["max_classes"] == 10_000


def test_the_class_limit_is_the_setting_passed_in(tmp_path: Path) -> None:
    path = npz(tmp_path, X=np.ones((6, 2)), y=np.arange(6))
    assert load(path, max_classes=6).num_classes == 6
    with pytest.raises(InvalidInputError, match="means 6 classes; the limit is 5"):
        load(path, max_classes=5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_labels_are_refused_for_every_task(tmp_path: Path, bad: float) -> None:
    path = npz(tmp_path, X=X4, y=np.array([0.0, 1.0, 2.0, bad]))
    for task in (None, Task.classification, Task.regression):
        with pytest.raises(InvalidInputError, match="finite"):
            load(path, task=task)


def test_negative_and_fractional_class_labels(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="non-negative"):
        load(npz(tmp_path, X=X4, y=np.array([0, 1, -3, 2])))
    fractional = npz(tmp_path, X=X4, y=np.array([0.0, 1.5, 2.0, 1.0]))
    with pytest.raises(InvalidInputError, match="whole numbers"):
        load(fractional, task=Task.classification)
    assert load(fractional).task is Task.regression  # inferred: continuous targets


def test_float64_targets_beyond_float32_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="float32"):
        load(npz(tmp_path, X=X4, y=np.array([0.5, 1e300, 2.0, 1.0])))


def test_text_labels_are_class_names(tmp_path: Path) -> None:
    path = npz(tmp_path, X=X4, y=np.array(["dog", "cat", "dog", "bird"]))
    data = load(path)
    assert data.task is Task.classification
    assert data.class_names == ["bird", "cat", "dog"] and data.y.tolist() == [2, 1, 2, 0]
    assert data.y.dtype == np.int64
    data = load(npz(tmp_path, X=X4, y=np.array([b"b", b"a", b"b", b"a"])))
    assert data.class_names == ["a", "b"] and data.y.tolist() == [1, 0, 1, 0]
    with pytest.raises(InvalidInputError, match="class names; a regression dataset"):
        load(path, task=Task.regression)


def test_text_labels_follow_given_class_names(tmp_path: Path) -> None:
    names = np.array(["zebra", "dog", "cat", "bird"])
    path = npz(tmp_path, X=X4, y=np.array(["dog", "cat", "dog", "bird"]), class_names=names)
    data = load(path)
    assert data.class_names == ["zebra", "dog", "cat", "bird"]
    assert data.y.tolist() == [1, 2, 1, 3]
    path = npz(tmp_path, X=X4, y=np.array(["dog", "cow", "dog", "bird"]), class_names=names)
    with pytest.raises(InvalidInputError, match="'cow' is not one of class_names"):
        load(path)


def test_too_many_text_classes_and_bad_names(tmp_path: Path) -> None:
    path = npz(tmp_path, X=np.ones((5, 2)), y=np.array(list("abcde")))
    with pytest.raises(InvalidInputError, match="5 different class names; the limit is 4"):
        load(path, max_classes=4)
    with pytest.raises(InvalidInputError, match="control characters"):
        load(npz(tmp_path, X=X4, y=np.array(["a", "b\x07", "a", "b"])))
    with pytest.raises(InvalidInputError, match="at most 256 characters"):
        load(npz(tmp_path, X=X4, y=np.array(["a", "b" * 300, "a", "a"])))


def test_numeric_labels_must_have_a_given_class_name(tmp_path: Path) -> None:
    path = npz(tmp_path, X=X4, y=np.array([0, 1, 5, 1]), class_names=np.array(["a", "b"]))
    with pytest.raises(InvalidInputError, match="label 5 has no class name"):
        load(path)
    many = npz(tmp_path, X=X4, y=np.array([0, 1, 0, 1]),
               class_names=np.array([str(i) for i in range(20)]))
    with pytest.raises(InvalidInputError, match="20 classes; the limit is 10"):
        load(many, max_classes=10)


def test_object_and_structured_labels(tmp_path: Path) -> None:
    with pytest.raises(UnsafeInputError, match="pickled"):
        load(npz(tmp_path, X=X4, y=np.array([{"a": 1}] * 4, dtype=object)))
    records = np.zeros(4, dtype=[("a", "i4"), ("b", "f4")])
    with pytest.raises(InvalidInputError, match="y must hold numbers"):
        load(npz(tmp_path, X=X4, y=records))


def test_boolean_labels_are_two_classes(tmp_path: Path) -> None:
    data = load(npz(tmp_path, X=X4, y=np.array([True, False, True, True])))
    assert data.task is Task.classification and data.y.tolist() == [1, 0, 1, 1]


# features ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("X", "match"), [
    (np.array([[1.0, np.nan]] * 4), "finite"),
    (np.array([[1.0, np.inf]] * 4), "finite"),
    (np.array([[1.0, 1e300]] * 4), "float32 range"),
    (np.ones((0, 3)), "at least one sample"),
    (np.ones((4, 0)), "at least one sample"),
    (np.ones((4,)), "samples first"),
    (np.ones((4,) + (1,) * 8), "1 to 7 feature dimensions"),
    (np.array([["a", "b"]] * 4), "X must hold numbers"),
    (np.ones((4, 2), dtype=np.complex64), "X must hold numbers"),
])
def test_bad_features(tmp_path: Path, X: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        load(npz(tmp_path, X=X, y=np.arange(len(X)) % 2))


def _forged_npz(path: Path, shape: tuple[int, ...], payload: bytes = b"\0" * 64) -> Path:
    """An NPZ whose X header claims ``shape`` while holding a few bytes."""
    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                        "shape": shape})
    y = io.BytesIO()
    np.save(y, np.arange(2))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("X.npy", header.getvalue() + payload)
        zf.writestr("y.npy", y.getvalue())
    return path


def test_a_forged_array_header_is_refused_before_allocation(tmp_path: Path) -> None:
    path = _forged_npz(tmp_path / "forged.npz", (2, 2**40))
    with pytest.raises(InvalidInputError, match="declares shape"):
        load(path)


def test_an_npz_bomb_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, X=np.zeros((4, 2_000_000), np.float32), y=np.arange(4))
    with pytest.raises(PayloadTooLargeError, match="zip bomb"):
        load(path)
    with pytest.raises(PayloadTooLargeError, match="unpacks to"):
        load(path, max_bytes=10 * 2**20, max_ratio=1e9)


def test_a_damaged_npz_is_a_clear_error(tmp_path: Path) -> None:
    path = npz(tmp_path, X=np.ones((64, 64)), y=np.arange(64) % 2)
    data = bytearray(path.read_bytes())
    data[200:400] = b"\xff" * 200
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError):
        load(path)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InvalidInputError, match="not a readable NPZ"):
        load(path)


# CSV --------------------------------------------------------------------------------------


def test_csv_label_values(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n3,4,1e30\n")
    with pytest.raises(InvalidInputError, match="the limit is 10000"):
        load(path)
    path.write_text("a,b,label\n1,2,0\n3,4,nan\n")
    with pytest.raises(InvalidInputError, match="finite"):
        load(path)
    path.write_text("a,b,label\n1,2,0\n3,inf,1\n")
    with pytest.raises(InvalidInputError, match="finite"):
        load(path)
    path.write_text("a,b,label\n1,2,x\n3,4,y\n")
    with pytest.raises(InvalidInputError, match="holds text"):
        load(path, task=Task.regression)


def test_csv_with_too_many_class_names_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,label\n" + "".join(f"{i},name{i}\n" for i in range(50)))
    with pytest.raises(InvalidInputError, match="more than 10 different class names"):
        load(path, max_classes=10)
    assert load(path, max_classes=50).num_classes == 50


def test_csv_shape_problems(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n\n3,4,1\n")  # a blank line is skipped
    assert load(path).X.tolist() == [[1, 2], [3, 4]]
    path.write_text("a,b,label\n1,2,0\n3,1\n")
    with pytest.raises(InvalidInputError, match="line 3 has 2 fields; the header has 3"):
        load(path)
    path.write_text("label\n0\n1\n")
    with pytest.raises(InvalidInputError, match="at least one value"):
        load(path)
    path.write_text("a,label\n")
    with pytest.raises(InvalidInputError, match="at least one data row"):
        load(path)
    path.write_text("")
    with pytest.raises(InvalidInputError, match="header row"):
        load(path)
    path.write_text('a,label\n"' + "1" * 200_000 + '",0\n')
    with pytest.raises(InvalidInputError, match="not a readable CSV"):
        load(path)
    path.write_bytes(b"a,label\n\xff\xfe,0\n")
    with pytest.raises(InvalidInputError, match="UTF-8"):
        load(path)


# image zips -------------------------------------------------------------------------------


def test_image_zip_class_folder_cap(tmp_path: Path) -> None:
    entries = {f"{cls}/0.png": png_bytes(10 * i) for i, cls in enumerate("abcd")}
    path = write_zip(tmp_path / "imgs.zip", entries)
    assert load(path).num_classes == 4
    with pytest.raises(InvalidInputError, match="4 class folders; the limit is 3"):
        load(path, max_classes=3)


def test_image_zip_sizes_and_broken_images(tmp_path: Path) -> None:
    entries = {"a/0.png": png_bytes(10), "b/0.png": png_bytes(200)}
    path = write_zip(tmp_path / "imgs.zip", entries)
    for size in [(0, 8), (8, 5000), (-1, -1)]:
        with pytest.raises(InvalidInputError, match="out of range"):
            load(path, image_size=size)
    with pytest.raises(PayloadTooLargeError, match="decoded images"):
        load(path, image_size=(4096, 4096), max_bytes=2**20)
    broken = write_zip(tmp_path / "broken.zip", {"a/0.png": png_bytes(10),
                                                 "b/0.png": png_bytes(9)[:40]})
    with pytest.raises(InvalidInputError, match="not a readable image"):
        load(broken)
    control = write_zip(tmp_path / "ctl.zip", {"a/0.png": png_bytes(10),
                                               "b\x07/0.png": png_bytes(9)})
    with pytest.raises(InvalidInputError, match="control characters"):
        load(control)
