"""The built-in device catalog."""

from __future__ import annotations

import pytest

from tinymlaas.devices import device_names, get_device, load_catalog
from tinymlaas.domain import Device
from tinymlaas.errors import NotFoundError


def test_catalog_has_the_reference_boards() -> None:
    names = set(device_names())
    assert len(names) >= 10
    assert {
        "arduino-nano-33-ble-sense", "stm32-nucleo-l4r5zi", "stm32f746-discovery",
        "raspberry-pi-pico", "esp32-s3-devkitc", "alif-ensemble-e7", "raspberry-pi-4",
        "jetson-nano", "x86-64-server", "mps2-an386",
    } <= names


def test_public_specs() -> None:
    nano = get_device("arduino-nano-33-ble-sense")
    assert (nano.arch, nano.clock_mhz, nano.ram_kb, nano.flash_kb) == ("cortex-m4", 64, 256, 1024)
    l4 = get_device("stm32-nucleo-l4r5zi")
    assert (l4.clock_mhz, l4.ram_kb, l4.flash_kb) == (120, 640, 2048)
    f7 = get_device("stm32f746-discovery")
    assert (f7.arch, f7.clock_mhz, f7.ram_kb) == ("cortex-m7", 216, 320)
    pico = get_device("raspberry-pi-pico")
    assert (pico.arch, pico.ram_kb) == ("cortex-m0plus", 264)
    assert "fpu" not in pico.features
    m55 = get_device("alif-ensemble-e7")
    assert m55.arch == "cortex-m55" and "helium" in m55.features


def test_every_entry_is_a_valid_device() -> None:
    devices = load_catalog()
    assert all(isinstance(d, Device) for d in devices)
    assert len({d.name for d in devices}) == len(devices)
    for device in devices:
        assert device.title and device.runtimes and device.macs_per_cycle > 0
        if device.category == "mcu":
            assert "c" in device.runtimes and "tflite-micro" in device.runtimes
    # Faster architectures get larger estimate figures.
    rate = {d.arch: d.macs_per_cycle for d in devices}
    assert rate["cortex-m0plus"] < rate["cortex-m4"] < rate["cortex-m7"] < rate["cortex-m55"]
    assert rate["cortex-m55"] < rate["cortex-a72"] < rate["x86-64"]


def test_copies_do_not_change_the_catalog() -> None:
    device = get_device("jetson-nano")
    device.ram_kb = 1
    assert get_device("jetson-nano").ram_kb == 4 * 1024 * 1024


def test_unknown_device_lists_known_names() -> None:
    with pytest.raises(NotFoundError) as info:
        get_device("arduino-uno")
    assert "raspberry-pi-pico" in info.value.message
    assert "arduino-nano-33-ble-sense" in info.value.details["known"]
