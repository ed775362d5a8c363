"""Power cuts during MCUboot's swap, in gateway mode: the device resumes the swap at the
next boot and ends on a whole image, and the gateway reports what the device runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcuboot_device import (
    UNHEALTHY,
    McubootDevice,
    Package,
    SwapType,
    power_back_on,
    signed_package,
)

from tinymlaas.agent.gateway import install_package
from tinymlaas.installers import signing

SECTORS = 12  # 11 image sectors and the trailer's


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def factory(tmp_path: Path, key_dir: Path) -> Package:
    return signed_package(tmp_path, key_dir, name="app-1.0.0", version="1.0.0", size=3000)


@pytest.fixture
def device(key_dir: Path, factory: Package):
    with McubootDevice(signing.public_key_pem(key_dir), factory.image,
                       slot_sectors=SECTORS) as dev:
        yield dev


def padded(image: bytes, device: McubootDevice) -> bytes:
    return image + b"\xff" * (device.image_area - len(image))


def runs(device: McubootDevice, package: Package) -> bool:
    return device.running is not None and device.running.hash.hex() == package.image_hash


def test_the_swap_counts_its_flash_operations(tmp_path: Path, key_dir: Path,
                                              device: McubootDevice) -> None:
    new = signed_package(tmp_path, key_dir, name="app-1.1.0", version="1.1.0", size=4500)
    result = install_package(new.zip_path, device.address, on_stage=lambda *_: None,
                             timeout_s=10)
    assert result.committed
    assert device.last_swap_ops == device.swap_ops(SwapType.TEST) == 3 + 11 * 9 + 6


# Cut after: nothing; the type but not the status magic; the whole status; in sector 0
# (scratch erased); in sector 5 (its secondary copy erased); before the last sector's
# last status byte; while the trailers are rewritten; before the status is erased.
TEST_SWAP_CUTS = [0, 2, 3, 4, 3 + 5 * 9 + 4, 3 + 11 * 9 - 1, 3 + 11 * 9 + 1,
                  3 + 11 * 9 + 3, 3 + 11 * 9 + 5]


@pytest.mark.parametrize("cut", TEST_SWAP_CUTS)
def test_power_cut_during_the_update_swap(tmp_path: Path, key_dir: Path, factory: Package,
                                          device: McubootDevice, cut: int) -> None:
    new = signed_package(tmp_path, key_dir, name="app-1.1.0", version="1.1.0", size=4500)
    device.cut_swap_after = cut
    power_back_on(device)

    result = install_package(new.zip_path, device.address, on_stage=lambda *_: None,
                             timeout_s=10)

    assert device.power_cuts == 1
    assert device.resumed_swaps == (1 if cut >= 3 else 0)  # the status magic is op 3
    assert result.committed and result.outcome == "confirmed"
    assert result.active_hash == new.image_hash
    assert device.image_area_of(0) == padded(new.image, device)
    assert device.image_area_of(1) == padded(factory.image, device)
    assert not device.swap_in_progress and device.swaps == [SwapType.TEST]
    assert device.reboot() and runs(device, new)
    assert device.swaps == [SwapType.TEST]


REVERT_SWAP_CUTS = [0, 3, 3 + 3 * 9 + 5, 3 + 11 * 9, 3 + 11 * 9 + 4, 3 + 11 * 9 + 6]


@pytest.mark.parametrize("cut", REVERT_SWAP_CUTS)
def test_power_cut_during_the_revert_swap(tmp_path: Path, key_dir: Path, factory: Package,
                                          device: McubootDevice, cut: int) -> None:
    bad = signed_package(tmp_path, key_dir, name="app-1.1.0-bad", version="1.1.0",
                         marker=UNHEALTHY, size=4500)
    assert cut < device.swap_ops(SwapType.REVERT)
    power_back_on(device)

    def on_stage(stage: str, detail: str) -> None:
        if stage == "booted":  # the test swap is done; cut the power in the revert
            device.cut_swap_after = cut

    result = install_package(bad.zip_path, device.address, on_stage=on_stage, timeout_s=10)

    assert device.power_cuts == 1
    assert not result.committed and result.outcome == "reverted"
    assert result.active_hash == factory.image_hash
    assert device.image_area_of(0) == padded(factory.image, device)
    assert device.image_area_of(1) == padded(bad.image, device)
    assert device.swaps == [SwapType.TEST, SwapType.REVERT]
    assert device.reboot() and runs(device, factory)
    assert device.swaps == [SwapType.TEST, SwapType.REVERT]


def test_device_off_longer_than_the_gateway_waits(tmp_path: Path, key_dir: Path,
                                                  factory: Package,
                                                  device: McubootDevice) -> None:
    """The gateway never claims what it did not see; the device, once on, finishes the
    swap, runs the unconfirmed image, and reverts it at the next reset."""
    new = signed_package(tmp_path, key_dir, name="app-1.1.0", version="1.1.0", size=4500)
    device.cut_swap_after = 3 + 5 * 9 + 7
    stages: list[str] = []

    result = install_package(new.zip_path, device.address,
                             on_stage=lambda stage, _detail: stages.append(stage),
                             timeout_s=1.5)

    assert not result.committed and result.outcome == "unknown"
    assert result.active_hash is None and "did not come back" in result.detail
    assert stages[-1] == "reset"
    # Half swapped while off: the primary slot holds neither image whole.
    assert device.swap_in_progress
    assert device.image_area_of(0) not in (padded(new.image, device),
                                           padded(factory.image, device))
    assert device.power_on() and runs(device, new)
    assert device.image_area_of(0) == padded(new.image, device)
    assert device.trailer(0) == {"magic": True, "image_ok": False, "copy_done": True}
    assert device.reboot() and runs(device, factory)
    assert device.image_area_of(0) == padded(factory.image, device)
    assert device.swaps == [SwapType.TEST, SwapType.REVERT]
