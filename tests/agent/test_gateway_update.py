"""Gateway mode end to end: real signed images, smpclient over UDP, and an in-process MCU
whose MCUboot swaps with revert (tests/agent/mcuboot_device.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from mcuboot_device import (
    CRASH,
    SELF_CONFIRM,
    UNHEALTHY,
    McubootDevice,
    Package,
    SwapType,
    signed_package,
)

from tinymlaas.agent.gateway import STAGES, install_package, parse_address
from tinymlaas.errors import (
    ConflictError,
    InvalidInputError,
    ServiceUnavailableError,
    StepFailedError,
)
from tinymlaas.installers import signing


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def factory(tmp_path: Path, key_dir: Path) -> Package:
    return signed_package(tmp_path, key_dir, name="app-1.0.0", version="1.0.0", size=3000)


@pytest.fixture
def device(key_dir: Path, factory: Package):
    with McubootDevice(signing.public_key_pem(key_dir), factory.image) as dev:
        yield dev


class Stages:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, stage: str, detail: str) -> None:
        assert stage in STAGES, stage
        self.seen.append((stage, detail))

    @property
    def names(self) -> list[str]:
        names: list[str] = []
        for stage, _ in self.seen:
            if not names or names[-1] != stage:
                names.append(stage)
        return names


def padded(image: bytes, device: McubootDevice) -> bytes:
    return image + b"\xff" * (device.image_area - len(image))


def test_good_update_is_confirmed_and_stays_after_resets(tmp_path: Path, key_dir: Path,
                                                         factory: Package,
                                                         device: McubootDevice) -> None:
    new = signed_package(tmp_path, key_dir, name="app-1.1.0", version="1.1.0", size=4500)
    stages = Stages()

    result = install_package(new.zip_path, device.address, on_stage=stages, timeout_s=10)

    assert stages.names == ["uploading", "uploaded", "marked-test", "reset", "booted",
                            "confirmed"]
    assert result.committed and result.outcome == "confirmed"
    assert result.image_sha256 == new.image_hash and result.version == "1.1.0"
    assert result.previous_hash == factory.image_hash and result.previous_version == "1.0.0"
    assert result.active_hash == new.image_hash
    # The whole new image is in the primary slot, the whole old one in the secondary.
    assert device.image_area_of(0) == padded(new.image, device)
    assert device.image_area_of(1) == padded(factory.image, device)
    assert device.trailer(0) == {"magic": True, "image_ok": True, "copy_done": True}
    for _ in range(2):
        assert device.reboot()
        assert device.running is not None and device.running.hash.hex() == new.image_hash
    assert device.swaps == [SwapType.TEST]


@pytest.mark.parametrize("marker", [UNHEALTHY, CRASH], ids=["unhealthy", "crash"])
def test_bad_update_is_reverted_to_the_old_image(tmp_path: Path, key_dir: Path,
                                                 factory: Package, device: McubootDevice,
                                                 marker: bytes) -> None:
    bad = signed_package(tmp_path, key_dir, name="app-1.1.0-bad", version="1.1.0",
                         marker=marker, size=4500)
    stages = Stages()

    result = install_package(bad.zip_path, device.address, on_stage=stages, timeout_s=10)

    assert stages.names == ["uploading", "uploaded", "marked-test", "reset", "booted",
                            "reverted"]
    assert not result.committed and result.outcome == "reverted"
    assert result.active_hash == factory.image_hash == result.previous_hash
    assert device.image_area_of(0) == padded(factory.image, device)
    assert device.image_area_of(1) == padded(bad.image, device)
    assert device.swaps == [SwapType.TEST, SwapType.REVERT]
    booted = dict(stages.seen)["booted"]
    if marker == UNHEALTHY:  # it ran on test, failed the health check, then reverted
        assert "runs 1.1.0 on test" in booted
        assert "health check" in result.detail
        assert device.watchdog_resets == 0
    else:  # it never stayed up: the watchdog reset it and MCUboot reverted on its own
        assert "booted the previous image" in booted
        assert device.watchdog_resets == 1
    # Reverted for good: the next reset swaps nothing and the old image stays confirmed.
    assert device.reboot()
    assert device.running is not None and device.running.hash.hex() == factory.image_hash
    assert device.swaps == [SwapType.TEST, SwapType.REVERT]
    assert device.trailer(0)["image_ok"]


def test_an_application_that_confirms_itself_cannot_be_reverted(
        tmp_path: Path, key_dir: Path, factory: Package, device: McubootDevice) -> None:
    """The gateway says so instead of resetting in vain: the image stays, unhealthy."""
    bad = signed_package(tmp_path, key_dir, name="app-1.1.0-self", version="1.1.0",
                         marker=UNHEALTHY + SELF_CONFIRM, size=4500)
    stages = Stages()

    result = install_package(bad.zip_path, device.address, on_stage=stages, timeout_s=10)

    assert stages.names == ["uploading", "uploaded", "marked-test", "reset", "booted"]
    assert "confirmed it at boot" in dict(stages.seen)["booted"]
    assert not result.committed and result.outcome == "unhealthy"
    assert result.active_hash == bad.image_hash
    assert "cannot revert" in result.detail
    assert device.swaps == [SwapType.TEST] and device.boots == 2  # no second reset
    assert device.reboot() and device.running is not None
    assert device.running.hash.hex() == bad.image_hash


def test_image_the_bootloader_does_not_trust_never_runs(tmp_path: Path, key_dir: Path,
                                                        factory: Package,
                                                        device: McubootDevice) -> None:
    """Signed by another project's key: the gateway (not told which keys the device trusts)
    sends it, MCUboot refuses it at boot, and the gateway reports the old image running."""
    other = signed_package(tmp_path, tmp_path / "other-keys", name="app-foreign",
                           version="2.0.0", size=4000)
    stages = Stages()

    result = install_package(other.zip_path, device.address, on_stage=stages, timeout_s=10)

    assert not result.committed and result.outcome == "reverted"
    assert result.active_hash == factory.image_hash
    assert "did not boot" in result.detail
    assert device.refused_images == 1 and device.swaps == []
    assert device.image_area_of(0) == padded(factory.image, device)
    assert device.image_in(1) is None  # MCUboot erased it


def test_an_upload_the_device_refuses_changes_nothing(tmp_path: Path, key_dir: Path,
                                                      factory: Package) -> None:
    """Too large for this device's slots: refused at the first chunk."""
    new = signed_package(tmp_path, key_dir, name="app-1.1.0", version="1.1.0", size=4500)
    with McubootDevice(signing.public_key_pem(key_dir), factory.image,
                       slot_sectors=5) as small:
        stages = Stages()
        with pytest.raises(StepFailedError, match="INVALID_IMAGE_TOO_LARGE"):
            install_package(new.zip_path, small.address, on_stage=stages, timeout_s=10)
        assert stages.names == ["uploading"]
        assert small.image_in(1) is None and small.boots == 1
        assert small.image_area_of(0) == padded(factory.image, small)


def test_an_image_already_running_is_not_sent_again(factory: Package,
                                                    device: McubootDevice) -> None:
    stages = Stages()
    result = install_package(factory.zip_path, device.address, on_stage=stages, timeout_s=10)
    assert result.outcome == "unchanged" and result.committed
    assert "answered the health check" in result.detail
    assert stages.seen == []
    assert all(group != 1 or command != 1 for group, command, _ in device.requests)


def test_an_unhealthy_image_already_running_is_not_committed(
        tmp_path: Path, key_dir: Path, factory: Package, device: McubootDevice) -> None:
    """Offered again after it confirmed itself: still unhealthy, and said so."""
    bad = signed_package(tmp_path, key_dir, name="app-1.1.0-self", version="1.1.0",
                         marker=UNHEALTHY + SELF_CONFIRM, size=4500)
    first = install_package(bad.zip_path, device.address, on_stage=Stages(), timeout_s=10)
    assert first.outcome == "unhealthy"
    again = install_package(bad.zip_path, device.address, on_stage=Stages(), timeout_s=10)
    assert not again.committed and again.outcome == "unhealthy"
    assert "refused the health check" in again.detail and "nothing was sent" in again.detail


def test_an_older_image_is_refused_unless_allowed(tmp_path: Path, key_dir: Path,
                                                  factory: Package,
                                                  device: McubootDevice) -> None:
    older = signed_package(tmp_path, key_dir, name="app-0.9.0", version="0.9.0", size=3500)
    with pytest.raises(ConflictError, match=r"runs 1\.0\.0, newer than 0\.9\.0"):
        install_package(older.zip_path, device.address, on_stage=Stages(), timeout_s=10)
    assert device.image_in(1) is None

    result = install_package(older.zip_path, device.address, on_stage=Stages(), timeout_s=10,
                             allow_downgrade=True)
    assert result.committed and result.active_hash == older.image_hash


def test_a_silent_device_is_reported_before_anything_is_sent(tmp_path: Path, key_dir: Path,
                                                             ) -> None:
    new = signed_package(tmp_path, key_dir, name="app-1.1.0", version="1.1.0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        stages = Stages()
        with pytest.raises(ServiceUnavailableError, match="does not answer SMP requests"):
            install_package(new.zip_path, f"udp:127.0.0.1:{port}", on_stage=stages,
                            timeout_s=0.3)
    assert stages.seen == []


@pytest.mark.parametrize(("address", "expected"), [
    ("udp:127.0.0.1:1337", ("127.0.0.1", 1337)),
    ("udp:192.0.2.7", ("192.0.2.7", 1337)),
    ("udp:[::1]:5683", ("::1", 5683)),
    ("udp:mcu.local:9000", ("mcu.local", 9000)),
])
def test_addresses(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["serial:/dev/ttyACM0", "udp:", "udp:host:99999",
                                     "tcp:127.0.0.1:1337", "udp:a:b:c"])
def test_unsupported_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_address(address)
