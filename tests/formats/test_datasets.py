"""Datasets: every supported source, safe archive handling, deterministic splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import png_bytes, write_zip
from tinymlaas.domain import DatasetSplits, Task
from tinymlaas.errors import InvalidInputError, PayloadTooLargeError, UnsafeInputError
from tinymlaas.formats.datasets import load_builtin, load_dataset_file, split_indices

CAPS = {"max_bytes": 50 * 2**20, "max_entries": 1000, "max_ratio": 100.0,
        "max_classes": 10_000}


def load(path: Path, **kw):
    return load_dataset_file(path, **{**CAPS, **kw})


def test_builtin_digits() -> None:
    data = load_builtin("digits")
    assert data.X.shape == (1797, 1, 8, 8) and data.X.dtype == np.float32
    assert data.X.min() >= 0.0 and data.X.max() <= 1.0
    assert data.task is Task.classification and data.num_classes == 10


def test_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((20, 3)), y=np.arange(20) % 4)
    data = load(path)
    assert data.X.shape == (20, 3) and data.num_classes == 4 and data.y.dtype == np.int64
    np.savez(path, X=np.ones((20, 3)), y=np.linspace(0, 1, 20))
    assert load(path).task is Task.regression


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.array([{"a": 1}] * 3, dtype=object), y=np.arange(3))
    with pytest.raises(UnsafeInputError, match="pickled"):
        load(path)


def test_npz_missing_arrays_and_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, features=np.ones((4, 2)))
    with pytest.raises(InvalidInputError, match=r"lacks array\(s\) \['X', 'y'\]"):
        load(path)
    np.savez(path, X=np.ones((4, 2)), y=np.arange(3))
    with pytest.raises(InvalidInputError, match="4 samples but y has 3"):
        load(path)
    np.savez(path, X=np.full((4, 2), np.nan), y=np.arange(4))
    with pytest.raises(InvalidInputError, match="finite"):
        load(path)


def test_csv_with_string_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,kind\n1,2,cat\n3,4,dog\n5,6,cat\n")
    data = load(path)
    assert data.X.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert data.class_names == ["cat", "dog"] and data.y.tolist() == [0, 1, 0]
    with pytest.raises(InvalidInputError, match="label column 'missing'"):
        load(path, label_column="missing")
    path.write_text("a,label\nx,1\n")
    with pytest.raises(InvalidInputError, match="must be a number"):
        load(path)


def test_image_zip(tmp_path: Path) -> None:
    entries = {f"data/{cls}/{i}.png": png_bytes(v) for cls, v in (("dark", 10), ("light", 240))
               for i in range(3)}
    data = load(write_zip(tmp_path / "imgs.zip", entries), image_size=(4, 4))
    assert data.X.shape == (6, 1, 4, 4)
    assert data.class_names == ["dark", "light"] and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.X[0].max() < 0.1 and data.X[5].min() > 0.9


@pytest.mark.parametrize("name", ["../evil.png", "/abs/evil.png", "a/../../evil.png"])
def test_zip_path_traversal_is_refused(tmp_path: Path, name: str) -> None:
    path = write_zip(tmp_path / "bad.zip", {"a/x.png": png_bytes(1), name: png_bytes(2)})
    with pytest.raises(UnsafeInputError):
        load(path)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.zip"]


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bad.zip", {"a/x.png": png_bytes(1)},
                     symlinks={"b/link.png": "/etc/passwd"})
    with pytest.raises(UnsafeInputError, match="link"):
        load(path)


def test_zip_bomb_and_entry_caps(tmp_path: Path) -> None:
    bomb = write_zip(tmp_path / "bomb.zip", {"a/zeros.png": b"\0" * (20 * 2**20)})
    with pytest.raises(PayloadTooLargeError, match="ratio"):
        load(bomb)
    many = write_zip(tmp_path / "many.zip", {f"a/{i}.png": b"x" for i in range(20)})
    with pytest.raises(PayloadTooLargeError, match="entries"):
        load(many, max_entries=10)


def test_pickle_and_unknown_suffixes(tmp_path: Path) -> None:
    (tmp_path / "d.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(UnsafeInputError):
        load(tmp_path / "d.pkl")
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(InvalidInputError, match="unknown dataset format"):
        load(tmp_path / "d.parquet")


def test_splits_are_deterministic_disjoint_and_complete() -> None:
    splits = DatasetSplits(test_fraction=0.25, calibration_size=10, seed=3)
    a, b = split_indices(100, splits), split_indices(100, splits)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len(a["test"]) == 25 and len(a["train"]) == 75
    assert not set(a["test"]) & set(a["train"])
    assert set(a["calibration"]) <= set(a["train"]) and len(a["calibration"]) == 10
    other = split_indices(100, DatasetSplits(test_fraction=0.25, seed=4))
    assert not np.array_equal(a["test"], other["test"])
