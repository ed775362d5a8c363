"""What the gateway checks before it sends anything: the signed-image package and its
MCUboot image. A refused package never reaches the device."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from mcuboot_device import McubootDevice, Package, signed_package

from tinymlaas.agent.gateway import install_package, verify_package
from tinymlaas.artifacts.local import zip_directory
from tinymlaas.errors import InvalidInputError, UnsafeInputError
from tinymlaas.installers import signing


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def factory(tmp_path: Path, key_dir: Path) -> Package:
    return signed_package(tmp_path, key_dir, name="app-1.0.0", version="1.0.0", size=3000)


@pytest.fixture
def new(tmp_path: Path, key_dir: Path) -> Package:
    return signed_package(tmp_path, key_dir, name="app-1.1.0", version="1.1.0", size=4500)


@pytest.fixture
def device(key_dir: Path, factory: Package):
    with McubootDevice(signing.public_key_pem(key_dir), factory.image) as dev:
        yield dev


def repackaged(package: Package, target: Path, change: Callable[[Path], None]) -> Path:
    """The package's directory, changed, zipped again."""
    directory = target / "changed" / "signed-image"
    shutil.copytree(package.directory, directory)
    change(directory)
    zip_path = target / "changed.zip"
    zip_directory(directory, zip_path)
    return zip_path


def edit_manifest(**fields: object) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        manifest = json.loads((directory / "manifest.json").read_text())
        manifest.update(fields)
        (directory / "manifest.json").write_text(json.dumps(manifest))
    return change


def flip_byte(offset: int) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        image = directory / "app-1.1.0.signed.bin"
        data = bytearray(image.read_bytes())
        data[offset] ^= 0x01
        image.write_bytes(bytes(data))
    return change


def test_a_good_package_verifies(new: Package, key_dir: Path) -> None:
    for source in (new.zip_path, new.directory):
        facts, image = verify_package(source, trusted_keys=[signing.fingerprint(
            signing.public_key_pem(key_dir))])
        assert image == new.image
        assert facts.image_sha256 == new.image_hash and facts.version == "1.1.0"
        assert facts.image_name == "app-1.1.0.signed.bin" and facts.image_bytes == len(image)


def test_trusted_keys_let_the_project_key_through(new: Package, key_dir: Path,
                                                  device: McubootDevice) -> None:
    trusted = [signing.fingerprint(signing.public_key_pem(key_dir))]
    result = install_package(new.zip_path, device.address, on_stage=lambda *_: None,
                             timeout_s=10, trusted_keys=trusted)
    assert result.committed and result.active_hash == new.image_hash


def test_tampered_payload_is_refused_before_upload(tmp_path: Path, new: Package,
                                                   device: McubootDevice) -> None:
    tampered = repackaged(new, tmp_path, flip_byte(0x200 + 100))  # in the application
    stages: list[str] = []
    with pytest.raises(InvalidInputError, match="tampered or corrupt"):
        install_package(tampered, device.address,
                        on_stage=lambda stage, _d: stages.append(stage), timeout_s=10)
    assert stages == [] and device.requests == []
    assert device.image_in(1) is None


def test_tampered_signature_is_refused(tmp_path: Path, new: Package,
                                       device: McubootDevice) -> None:
    tampered = repackaged(new, tmp_path, flip_byte(len(new.image) - 10))  # in ECDSASIG
    with pytest.raises(InvalidInputError, match="failed verification"):
        install_package(tampered, device.address, on_stage=lambda *_: None, timeout_s=10)
    assert device.requests == []


def test_an_image_swapped_for_another_signed_one_is_refused(tmp_path: Path, new: Package,
                                                           factory: Package,
                                                           device: McubootDevice) -> None:
    """Well signed, but not the image the manifest names (its hash TLV differs)."""
    def swap(directory: Path) -> None:
        (directory / "app-1.1.0.signed.bin").write_bytes(factory.image)

    with pytest.raises(UnsafeInputError, match="hash TLV"):
        install_package(repackaged(new, tmp_path, swap), device.address,
                        on_stage=lambda *_: None, timeout_s=10)
    assert device.requests == []


def test_a_key_the_device_does_not_trust_is_refused(tmp_path: Path, new: Package,
                                                    device: McubootDevice) -> None:
    other = signing.fingerprint(_other_key(tmp_path))
    with pytest.raises(UnsafeInputError, match="does not trust"):
        install_package(new.zip_path, device.address, on_stage=lambda *_: None,
                        timeout_s=10, trusted_keys=[other])
    assert device.requests == []


def _other_key(tmp_path: Path) -> bytes:
    signing.ensure_key(tmp_path / "other-keys")
    return signing.public_key_pem(tmp_path / "other-keys")


@pytest.mark.parametrize(("change", "error", "message"), [
    (edit_manifest(key_fingerprint_sha256="0" * 64), UnsafeInputError, "not by the key"),
    (edit_manifest(version="1.2.0"), UnsafeInputError, "manifest says 1.2.0"),
    (edit_manifest(image="../app-1.1.0.signed.bin"), UnsafeInputError, "plain file name"),
    (edit_manifest(image="missing.bin"), InvalidInputError, "lacks missing.bin"),
    (edit_manifest(format="c-bundle"), InvalidInputError, "does not describe an MCUboot"),
    (lambda d: (d / "manifest.json").unlink(), InvalidInputError, "no manifest.json"),
    (lambda d: (d / "manifest.json").write_text("{"), InvalidInputError, "not JSON"),
    (lambda d: (d / "app-1.1.0.signed.bin").write_bytes(b"\x7fELF" + bytes(600)),
     InvalidInputError, "not an MCUboot image|not a readable MCUboot image"),
], ids=["other-key", "version", "traversal", "missing-image", "format", "no-manifest",
        "bad-json", "not-mcuboot"])
def test_broken_packages_are_refused(tmp_path: Path, new: Package, device: McubootDevice,
                                     change: Callable[[Path], None], error: type[Exception],
                                     message: str) -> None:
    with pytest.raises(error, match=message):
        install_package(repackaged(new, tmp_path, change), device.address,
                        on_stage=lambda *_: None, timeout_s=10)
    assert device.requests == []


def test_a_confirmed_image_is_refused(tmp_path: Path, key_dir: Path,
                                      device: McubootDevice) -> None:
    confirmed = signed_package(tmp_path, key_dir, name="app-1.2.0", version="1.2.0",
                               confirm=True)
    with pytest.raises(InvalidInputError, match="could not be reverted"):
        install_package(confirmed.zip_path, device.address, on_stage=lambda *_: None,
                        timeout_s=10)
    assert device.requests == []


def test_an_unsafe_archive_is_refused(tmp_path: Path, new: Package,
                                      device: McubootDevice) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("manifest.json", (new.directory / "manifest.json").read_text())
        archive.writestr("../escape.bin", new.image)
    with pytest.raises(UnsafeInputError, match="escapes the archive"):
        install_package(evil, device.address, on_stage=lambda *_: None, timeout_s=10)
    assert device.requests == [] and not (tmp_path / "escape.bin").exists()
