"""The content-addressed artifact store."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from tinymlaas.artifacts import LocalArtifactStore
from tinymlaas.errors import NotFoundError, PayloadTooLargeError


def test_blobs_are_addressed_by_their_sha256(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    src = tmp_path / "x.bin"
    src.write_bytes(b"hello")
    sha, size = store.put_file(src)
    assert sha == hashlib.sha256(b"hello").hexdigest() and size == 5
    path = store.path(sha)
    assert path == tmp_path / "a" / sha[:2] / sha and path.read_bytes() == b"hello"
    assert not path.stat().st_mode & 0o222  # read-only: written once, never modified
    assert store.put_file(src) == (sha, 5)  # same content, same blob
    assert [p.name for p in (tmp_path / "a").rglob("*") if p.is_file()] == [sha]


def test_oversize_stream_stores_nothing(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    with pytest.raises(PayloadTooLargeError):
        store.put_stream(io.BytesIO(b"x" * 5000), max_bytes=4096)
    assert [p for p in (tmp_path / "a").rglob("*") if p.is_file()] == []


def test_directories_are_stored_reproducibly(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    shas = []
    for name in ("one", "two"):
        tree = tmp_path / name
        (tree / "sub").mkdir(parents=True)
        (tree / "model.c").write_text("int x;")
        (tree / "sub" / "model.h").write_text("extern int x;")
        shas.append(store.put_directory(tree)[0])
    assert shas[0] == shas[1]
    out = store.unpack(shas[0], tmp_path / "out")
    assert (out / "sub" / "model.h").read_text() == "extern int x;"


def test_unknown_and_malformed_addresses(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    with pytest.raises(NotFoundError):
        store.path("0" * 64)
    with pytest.raises(NotFoundError, match="not an artifact address"):
        store.path("../../etc/passwd")
    assert not store.exists("0" * 64)
