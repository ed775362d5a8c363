"""A/B slots: hostile archives are refused, a slot is written whole, ``current`` switches
atomically, and the health check runs the installed wheel on its golden data."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from agent_support import make_release, sha256
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from helpers import write_zip
from tinymlaas.agent.health import check_files, check_python
from tinymlaas.agent.slots import (
    current_slot,
    install_slot,
    point_current,
    slot_intact,
    unpack_zip,
)
from tinymlaas.agent.store import Layout
from tinymlaas.agent.verify import VerifiedRelease
from tinymlaas.contracts.ota import HealthSpec
from tinymlaas.errors import PayloadTooLargeError, UnsafeInputError


@pytest.mark.parametrize(("entries", "links", "message"), [
    ({"../evil.py": b"x"}, None, "unsafe path"),
    ({"/etc/evil": b"x"}, None, "unsafe path"),
    ({"a\\..\\b": b"x"}, None, "unsafe path"),
    ({"ok.txt": b"x"}, {"link": "/etc/passwd"}, "link or special file"),
])
def test_agent_refuses_unsafe_archive_entries(tmp_path: Path, entries: dict[str, bytes],
                                              links: dict[str, str] | None,
                                              message: str) -> None:
    archive = write_zip(tmp_path / "bad.zip", entries, symlinks=links)
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeInputError, match=message):
        unpack_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()


def test_agent_caps_entries_bytes_and_compression_ratio(tmp_path: Path) -> None:
    many = write_zip(tmp_path / "many.zip", {f"f{i}": b"" for i in range(11)})
    (tmp_path / "o1").mkdir()
    with pytest.raises(PayloadTooLargeError, match="entries"):
        unpack_zip(many, tmp_path / "o1", max_entries=10)
    big = write_zip(tmp_path / "big.zip", {"a": b"x" * 5000})
    (tmp_path / "o2").mkdir()
    with pytest.raises(PayloadTooLargeError, match="more than 4096 bytes"):
        unpack_zip(big, tmp_path / "o2", max_bytes=4096)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * (8 << 20))
    (tmp_path / "o3").mkdir()
    with pytest.raises(UnsafeInputError, match="zip bomb"):
        unpack_zip(bomb, tmp_path / "o3")


def _install(tmp_path: Path, key: Ed25519PrivateKey, package: tuple[Path, Path],
             slot: str, health: HealthSpec | None = None) -> tuple[Layout, str | None]:
    layout = Layout(tmp_path / "root")
    layout.create()
    release = make_release(key, *package, version=1, health=health)
    verified = VerifiedRelease(release.document, None, release.manifest)  # type: ignore[arg-type]
    return layout, install_slot(layout, slot, verified, release.files)


def test_agent_installs_a_wheel_into_a_slot_and_switches_current(
        tmp_path: Path, release_key: Ed25519PrivateKey, package: tuple[Path, Path]) -> None:
    layout, import_name = _install(tmp_path, release_key, package, "b")
    assert import_name == "linear_model"
    slot = layout.slot("b")
    assert (slot / "content" / "linear_model" / "model.onnx").is_file()
    assert not (layout.slots / "b.partial").exists()
    expected = {package[0].name: sha256(package[0]), package[1].name: sha256(package[1])}
    assert slot_intact(layout, "b", expected) == []
    assert current_slot(layout) is None
    point_current(layout, "b")
    assert os.readlink(layout.current) == "slots/b" and current_slot(layout) == "b"
    assert not layout.current_new.exists()
    (slot / "release" / package[1].name).write_bytes(b"changed")
    assert slot_intact(layout, "b", expected) == [f"{package[1].name} does not hash as the "
                                                  "manifest says"]
    point_current(layout, None)
    assert not layout.current.is_symlink()


def test_agent_health_check_runs_the_installed_wheel_on_the_golden_data(
        tmp_path: Path, release_key: Ed25519PrivateKey, package: tuple[Path, Path]) -> None:
    layout, import_name = _install(tmp_path, release_key, package, "a")
    content, golden = layout.slot("a") / "content", layout.slot("a") / "release" / "golden.npz"
    good = check_python(content, import_name or "", golden, HealthSpec(golden="golden.npz"))
    assert good.ok, good.detail
    assert good.latency_ms is not None and good.latency_ms > 0

    slow = check_python(content, import_name or "", golden,
                        HealthSpec(golden="golden.npz", max_latency_ms=1e-6))
    assert not slow.ok and "over the limit" in slow.detail

    with np.load(golden) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["output/0"] = arrays["output/0"] + 1.0
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **arrays)
    mismatch = check_python(content, import_name or "", wrong, HealthSpec(golden="x"))
    assert not mismatch.ok and "differs from the golden output" in mismatch.detail

    (content / "linear_model" / "__init__.py").write_text("raise RuntimeError('broken')\n")
    broken = check_python(content, import_name or "", golden, HealthSpec(golden="x"))
    assert not broken.ok and "RuntimeError: broken" in broken.detail

    (content / "linear_model" / "__init__.py").write_text(
        "import time\ndef predict(data):\n    time.sleep(60)\n")
    hung = check_python(content, import_name or "", golden, HealthSpec(golden="x"),
                        timeout_s=2)
    assert not hung.ok and "more than 2 s" in hung.detail


def test_agent_installs_a_c_bundle_whose_health_is_its_files(
        tmp_path: Path, release_key: Ed25519PrivateKey) -> None:
    bundle = write_zip(tmp_path / "c-bundle.zip", {"src/model.c": b"int model;\n",
                                                   "include/model.h": b"#pragma once\n",
                                                   "manifest.json": b"{}"})
    layout = Layout(tmp_path / "root")
    layout.create()
    release = make_release(release_key, bundle, None, version=2, kind="c-bundle")
    verified = VerifiedRelease(release.document, None, release.manifest)  # type: ignore[arg-type]
    assert install_slot(layout, "a", verified, release.files) is None
    assert (layout.slot("a") / "content" / "src" / "model.c").read_bytes() == b"int model;\n"
    expected = {bundle.name: sha256(bundle)}
    assert check_files(slot_intact(layout, "a", expected)).ok
    (layout.slot("a") / "release" / bundle.name).unlink()
    health = check_files(slot_intact(layout, "a", expected))
    assert not health.ok and "c-bundle.zip is missing" in health.detail
