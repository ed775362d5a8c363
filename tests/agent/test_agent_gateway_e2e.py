"""Gateway mode from the Studio to the MCU: runs that build firmware with package-c and sign it
with sign-image (arm-none-eabi-gcc, the project's key) are released and rolled out; the real
``tinymlaas agent --gateway`` process installs them over SMP/UDP on an in-process MCU whose
MCUboot swaps with revert (tests/agent/mcuboot_device.py) and trusts the project's key as the
Studio's API gives it.

The bad firmware is a real build too: its model's bias holds the bytes of the simulator's
"unhealthy" marker, so the application it makes refuses the health check (and, in a second
build, also the "self-confirm" marker: the application confirms its own image at boot, so
MCUboot cannot revert it).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from agent_e2e import Studio, agent, current_release, enroll, summary
from mcuboot_device import SELF_CONFIRM, UNHEALTHY, McubootDevice, SwapType
from onnx import TensorProto, helper, numpy_helper

from tinymlaas.domain.fleet import Release

DEVICE = "stm32f746-discovery"
GATEWAY_STAGES = ["uploading", "uploaded", "marked-test", "reset", "booted"]


@dataclass(frozen=True)
class Firmware:
    """A finished run ending in sign-image, and its signed image as the Studio stored it."""

    run_id: str
    version: str
    image: bytes
    image_hash: str


def _model(path: Path, bias: np.ndarray) -> Path:
    """``y = x @ W + bias``, 8 -> len(bias), fixed batch of one."""
    classes = len(bias)
    weights = np.random.default_rng(3).normal(size=(8, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
        "mcu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _signed_image(studio: Studio, package_sha: str) -> tuple[bytes, str]:
    """The MCUboot image in a stored signed-image package, and its hash from the manifest."""
    with zipfile.ZipFile(io.BytesIO(studio.blob(package_sha).read_bytes())) as archive:
        names = {Path(n).name: n for n in archive.namelist()}
        manifest = json.loads(archive.read(names["manifest.json"]))
        return archive.read(names[manifest["image"]]), manifest["image_hash_sha256"]


@pytest.fixture(scope="module")
def firmware(studio: Studio, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Firmware]:
    """Firmware runs for one Cortex-M7 board: the factory image (1.0.0), a good update
    (1.1.0), a bad one (1.2.0, whose model carries the unhealthy marker) and a bad one whose
    application confirms itself (1.3.0)."""
    folder = tmp_path_factory.mktemp("firmware")
    marker = np.frombuffer(UNHEALTHY + b"XYZ", dtype="<f4").copy()  # 20 bytes, 5 floats
    stuck = np.frombuffer(SELF_CONFIRM + UNHEALTHY + b"XYZ", dtype="<f4").copy()
    assert np.all(np.isfinite(marker)) and np.all(np.isfinite(stuck))
    specs = {"factory": ("1.0.0", np.zeros(5, np.float32)),
             "good": ("1.1.0", np.full(5, 0.5, np.float32)), "bad": ("1.2.0", marker),
             "stuck": ("1.3.0", stuck)}
    runs = {}
    for name, (version, bias) in specs.items():
        model = studio.client.upload_model(_model(folder / f"mcu-{name}.onnx", bias),
                                           name=f"mcu-{name}")
        runs[name] = studio.client.create_run(
            model.id, device=DEVICE, pipeline={
                "evaluate": False,
                "steps": ["package-c", {"sign-image": {"version": version}}]})
    deadline = time.monotonic() + 120
    done = {}
    while len(done) < len(runs) and time.monotonic() < deadline:
        for name, run in runs.items():
            if name not in done:
                run = studio.client.get_run(run.id)
                if run.status.value in ("succeeded", "failed", "cancelled"):
                    assert run.status.value == "succeeded", (name, run.error)
                    done[name] = run
        time.sleep(0.2)
    assert len(done) == len(runs), f"firmware runs not finished: {sorted(set(runs) - set(done))}"
    firmware = {}
    for name, (version, _) in specs.items():
        step = done[name].steps[-1]
        assert step.transformer == "sign-image" and step.output_sha is not None
        image, image_hash = _signed_image(studio, step.output_sha)
        firmware[name] = Firmware(runs[name].id, version, image, image_hash)
    assert UNHEALTHY in firmware["bad"].image and UNHEALTHY not in firmware["good"].image
    assert SELF_CONFIRM in firmware["stuck"].image and UNHEALTHY in firmware["stuck"].image
    return firmware


@pytest.fixture
def mcu(studio: Studio, firmware: dict[str, Firmware]) -> Iterator[McubootDevice]:
    """An MCU programmed at the factory with the 1.0.0 image, whose MCUboot trusts the
    project's signing key as the Studio's API gives it."""
    key = studio.client.signing_key(studio.project)
    with McubootDevice(key.public_key_pem.encode(), firmware["factory"].image) as device:
        assert device.running is not None and device.running.version == "1.0.0"
        yield device


def _history(studio: Studio, device: str, action: str) -> list[tuple[str, str]]:
    events = studio.client.fleet_device(device).history
    return [(e.stage, e.message) for e in sorted(events, key=lambda e: e.at)
            if e.action_id == action]


def _gateway_stages(history: list[tuple[str, str]]) -> list[str]:
    """The gateway's stages reported during the health stage, repeats folded."""
    stages: list[str] = []
    for stage, message in history:
        if stage == "health" and message.startswith("gateway "):
            name = message.removeprefix("gateway ").split(":", 1)[0]
            if not stages or stages[-1] != name:
                stages.append(name)
    return stages


def _action(studio: Studio, rollout_id: str, device: str):
    (action,) = [a for a in studio.client.rollout(rollout_id).actions if a.device_id == device]
    return action


def _release(studio: Studio, fw: Firmware) -> Release:
    release = studio.client.create_release(fw.run_id)
    assert release.manifest["signed"]["package"]["kind"] == "signed-image"
    return release


def test_gateway_installs_a_studio_release_on_the_mcu(studio: Studio, tmp_path: Path,
                                                      firmware: dict[str, Firmware],
                                                      mcu: McubootDevice) -> None:
    device, code = enroll(studio, "gateway-1", "gw-good", profile=DEVICE)
    release = _release(studio, firmware["good"])
    rollout = studio.client.deploy("gw-good", release=release.id)
    root = tmp_path / "gateway"

    done = agent(root, server=studio.url, code=code, gateway=mcu.address, health_timeout=30)
    assert done.returncode == 0, done.stderr
    result = summary(done)
    assert (result["outcome"], result["version"], result["slot"]) == \
        ("committed", release.version, "a"), (result, done.stderr[-3000:])
    assert "1.1.0 is confirmed" in result["details"][0]

    # the MCU runs the new image, confirmed, and keeps it over a reset
    new = firmware["good"]
    assert mcu.running is not None and mcu.running.hash.hex() == new.image_hash
    assert mcu.running.version == "1.1.0"
    assert mcu.trailer(0)["image_ok"] and mcu.swaps == [SwapType.TEST]
    assert mcu.reboot() and mcu.running.hash.hex() == new.image_hash
    assert mcu.swaps == [SwapType.TEST]
    assert mcu.image_in(1) is not None and mcu.image_in(1).version == "1.0.0"
    assert current_release(root) == (release.version, "a")  # the gateway's own slot

    action = _action(studio, rollout.id, device)
    assert (action.state.value, action.stage) == ("succeeded", "committed")
    history = _history(studio, device, action.id)
    assert [s for s, _ in history if s != "health"] == [
        "downloading", "downloaded", "verified", "installed", "switched", "committed"]
    assert _gateway_stages(history) == [*GATEWAY_STAGES, "confirmed"]
    shown = studio.client.fleet_device(device)
    assert (shown.version, shown.release_id, shown.health) == (release.version, release.id, "ok")


def test_gateway_bad_firmware_is_reverted_by_mcuboot(studio: Studio, tmp_path: Path,
                                                     firmware: dict[str, Firmware],
                                                     mcu: McubootDevice) -> None:
    device, code = enroll(studio, "gateway-2", "gw-bad", profile=DEVICE)
    root = tmp_path / "gateway"
    good = _release(studio, firmware["good"])
    studio.client.deploy("gw-bad", release=good.id)
    first = agent(root, server=studio.url, code=code, gateway=mcu.address, health_timeout=30)
    assert summary(first)["outcome"] == "committed", first.stderr

    bad = _release(studio, firmware["bad"])
    rollout = studio.client.deploy("gw-bad", release=bad.id)
    done = agent(root, gateway=mcu.address, health_timeout=30)
    assert done.returncode == 0, done.stderr
    result = summary(done)
    assert (result["outcome"], result["version"], result["slot"]) == \
        ("rolled_back", good.version, "a"), result
    assert "refused the health check" in result["details"][0]
    assert "runs 1.1.0 again" in result["details"][0]

    # MCUboot test-booted 1.2.0, the gateway did not confirm it, the next reset reverted it
    assert mcu.swaps == [SwapType.TEST, SwapType.TEST, SwapType.REVERT]
    assert mcu.running is not None and mcu.running.hash.hex() == firmware["good"].image_hash
    assert mcu.trailer(0)["image_ok"] and mcu.healthy
    assert mcu.reboot() and mcu.running.hash.hex() == firmware["good"].image_hash
    assert current_release(root) == (good.version, "a")

    action = _action(studio, rollout.id, device)
    assert (action.state.value, action.stage) == ("rolled_back", "rolled_back")
    assert "refused the health check" in action.message
    history = _history(studio, device, action.id)
    assert history[-1][0] == "rolled_back"
    assert _gateway_stages(history) == [*GATEWAY_STAGES, "reverted"]
    shown = studio.client.fleet_device(device)
    assert (shown.version, shown.release_id) == (good.version, good.id)


def test_signed_image_without_gateway_is_refused(studio: Studio, tmp_path: Path,
                                                 firmware: dict[str, Firmware],
                                                 mcu: McubootDevice) -> None:
    device, code = enroll(studio, "gateway-3", "gw-none", profile=DEVICE)
    release = _release(studio, firmware["good"])
    rollout = studio.client.deploy("gw-none", release=release.id)
    root = tmp_path / "gateway"

    done = agent(root, server=studio.url, code=code)
    assert done.returncode == 0, done.stderr
    result = summary(done)
    assert result["outcome"] == "refused" and "--gateway" in result["details"][0], result
    assert current_release(root) == (None, None)
    assert mcu.requests == [] and mcu.swaps == []  # nothing reached the MCU
    assert mcu.running is not None and mcu.running.hash.hex() == firmware["factory"].image_hash

    action = _action(studio, rollout.id, device)
    assert (action.state.value, action.stage) == ("failed", "refused")
    assert "--gateway" in action.message
    assert [s for s, _ in _history(studio, device, action.id)] == ["downloading", "refused"]
    assert studio.client.fleet_device(device).version is None

    # a gateway enrolled without the MCU board's profile is refused too, and told why
    device, code = enroll(studio, "gateway-6", "gw-noprofile")
    studio.client.deploy("gw-noprofile", release=release.id)
    done = agent(tmp_path / "noprofile", server=studio.url, code=code, gateway=mcu.address)
    result = summary(done)
    assert result["outcome"] == "refused", result
    assert result["details"][0] == (
        f"the release is built for device profile {DEVICE!r}; this device has none (enroll "
        "it with that profile)")
    assert mcu.requests == []


def test_gateway_reports_failed_when_the_mcu_keeps_or_may_keep_the_new_image(
        studio: Studio, tmp_path: Path, firmware: dict[str, Firmware],
        mcu: McubootDevice) -> None:
    # an unhealthy application that confirmed itself at boot: MCUboot cannot revert it
    device, code = enroll(studio, "gateway-4", "gw-stuck", profile=DEVICE)
    release = _release(studio, firmware["stuck"])
    rollout = studio.client.deploy("gw-stuck", release=release.id)
    done = agent(tmp_path / "stuck", server=studio.url, code=code, gateway=mcu.address,
                 health_timeout=30)
    assert done.returncode == 0, done.stderr
    result = summary(done)
    assert (result["outcome"], result["version"]) == ("failed", release.version), result
    assert "MCUboot cannot revert it" in result["details"][0]
    assert mcu.running is not None and mcu.running.hash.hex() == firmware["stuck"].image_hash
    assert not mcu.healthy and mcu.swaps == [SwapType.TEST]
    assert current_release(tmp_path / "stuck") == (None, None)
    action = _action(studio, rollout.id, device)
    assert (action.state.value, action.stage) == ("failed", "failed")
    assert "MCUboot cannot revert it" in action.message
    assert _gateway_stages(_history(studio, device, action.id)) == GATEWAY_STAGES
    assert studio.client.fleet_device(device).version is None

    # an MCU that takes longer to restart than the gateway waits: its state is unknown
    key = studio.client.signing_key(studio.project).public_key_pem.encode()
    with McubootDevice(key, firmware["factory"].image, reboot_s=3.0) as slow:
        device, code = enroll(studio, "gateway-5", "gw-slow", profile=DEVICE)
        good = _release(studio, firmware["good"])
        rollout = studio.client.deploy("gw-slow", release=good.id)
        done = agent(tmp_path / "slow", server=studio.url, code=code, gateway=slow.address,
                     health_timeout=1)
        assert done.returncode == 0, done.stderr
        result = summary(done)
        assert result["outcome"] == "failed", result
        assert "did not come back within 1 s" in result["details"][0]
        action = _action(studio, rollout.id, device)
        assert (action.state.value, action.stage) == ("failed", "failed")
        assert "did not come back" in action.message
        # it comes up on the new image, unconfirmed; its next reset reverts it
        deadline = time.monotonic() + 10
        while not (slow.powered and slow.swaps) and time.monotonic() < deadline:
            time.sleep(0.05)
        with slow.lock:
            assert slow.running is not None and slow.swaps == [SwapType.TEST]
            assert slow.running.hash.hex() == firmware["good"].image_hash
            assert not slow.trailer(0)["image_ok"]
        assert slow.reboot() and slow.swaps == [SwapType.TEST, SwapType.REVERT]
        assert slow.running is not None
        assert slow.running.hash.hex() == firmware["factory"].image_hash
