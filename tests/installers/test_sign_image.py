"""``sign-image``: MCUboot images built with arm-none-eabi-gcc and signed with imgtool."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from helpers import need_service
from tinymlaas.compiler import CompileResult, HostModel, compile_onnx
from tinymlaas.devices.catalog import get_device
from tinymlaas.domain import ArtifactKind, Device
from tinymlaas.errors import InvalidInputError, NotFoundError, UnsupportedModelError
from tinymlaas.installers import signing
from tinymlaas.installers.firmware import tools_missing
from tinymlaas.transformers.base import StepContext
from tinymlaas.transformers.package.sign_image import SignImage, SignImageParams
from tinymlaas.transformers.registry import get_transformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compiler"))
from graphs import float_ops_graph, tflite_style_int8

IMGTOOL = Path(sys.executable).with_name("imgtool")
if not IMGTOOL.exists():
    IMGTOOL = Path(shutil.which("imgtool") or "imgtool")
QEMU = "qemu-system-arm"

# A stand-in for MCUboot's last step on the MPS2 AN386 (Cortex-M4): check the header magic
# of the image in the primary slot, point VTOR at its vector table (slot + header size),
# load its stack pointer and jump to its reset handler.
_BOOT_STUB = r"""
#include <stdint.h>
#define SLOT 0x10000u
extern uint32_t _estack;
void stub_reset(void);
__attribute__((section(".vectors"), used)) const void* const vectors[2] = {&_estack, stub_reset};
void stub_reset(void) {
  const volatile uint32_t* hdr = (const volatile uint32_t*)SLOT;
  if (hdr[0] != 0x96f3b83du) for (;;) {}
  uint32_t vt = SLOT + (hdr[2] & 0xffffu);
  *(volatile uint32_t*)0xE000ED08u = vt;
  uint32_t sp = ((const volatile uint32_t*)vt)[0], pc = ((const volatile uint32_t*)vt)[1];
  __asm volatile("msr msp, %0\n\tbx %1" :: "r"(sp), "r"(pc));
  for (;;) {}
}
"""
_BOOT_STUB_LD = """
MEMORY { FLASH (rx) : ORIGIN = 0, LENGTH = 64K  RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 64K }
ENTRY(stub_reset)
SECTIONS { .vectors : { KEEP(*(.vectors)) } > FLASH  .text : { *(.text*) } > FLASH
           _estack = ORIGIN(RAM) + LENGTH(RAM); }
"""


@pytest.fixture(autouse=True)
def _toolchain() -> None:
    missing = tools_missing()
    need_service(not missing, " and ".join(missing) or "the Arm toolchain")
    need_service(IMGTOOL.exists(), "imgtool")


@pytest.fixture(scope="module")
def float_model(tmp_path_factory: pytest.TempPathFactory) -> CompileResult:
    return compile_onnx(float_ops_graph(), tmp_path_factory.mktemp("float") / "c", name="net")


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> CompileResult:
    return compile_onnx(tflite_style_int8(), tmp_path_factory.mktemp("int8") / "c", name="kws")


def _sign(source: Path, tmp: Path, key_dir: Path, device: Device | None,
          kind: ArtifactKind = ArtifactKind.c_source, tag: str = "run", **params: object):
    transformer = SignImage()
    ctx = StepContext(input_path=source, input_kind=kind,
                      params=SignImageParams.model_validate(params), out_dir=tmp / tag / "out",
                      work_dir=tmp / tag / "work", device=device, key_dir=key_dir)
    return transformer.run(ctx)


def _imgtool_verify(image: Path, public_pem: bytes, tmp: Path) -> subprocess.CompletedProcess:
    key = tmp / "verify-key.pem"
    key.write_bytes(public_pem)
    return subprocess.run([str(IMGTOOL), "verify", "-k", str(key), str(image)],
                          capture_output=True, text=True, check=False)


def _boot_in_qemu(image_hex: Path, tmp: Path) -> str:
    (tmp / "stub.c").write_text(_BOOT_STUB)
    (tmp / "stub.ld").write_text(_BOOT_STUB_LD)
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-Os", "-nostdlib",
                    "-T", str(tmp / "stub.ld"), str(tmp / "stub.c"), "-o", str(tmp / "stub.elf")],
                   check=True)
    proc = subprocess.run(
        [QEMU, "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
         "-semihosting-config", "enable=on,target=native", "-kernel", str(tmp / "stub.elf"),
         "-device", f"loader,file={image_hex}"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _out_bytes(text: str, index: int = 0) -> bytes:
    match = re.search(rf"^OUT{index} ([0-9a-f]+)$", text, re.MULTILINE)
    assert match, text
    return bytes.fromhex(match.group(1))


def test_registered_and_declared() -> None:
    transformer = get_transformer("sign-image")
    assert isinstance(transformer, SignImage)
    assert transformer.uses_device and transformer.signs
    assert transformer.accepts == {ArtifactKind.c_source, ArtifactKind.c_bundle}
    assert transformer.produces == ArtifactKind.signed_image


def test_signed_image_verifies_with_imgtool_and_describes_itself(
        float_model: CompileResult, tmp_path: Path) -> None:
    keys = tmp_path / "keys" / "p1"
    step = _sign(float_model.directory, tmp_path, keys, get_device("stm32f746-discovery"),
                 version="1.2.3+4", security_counter=7)
    out = step.path
    assert step.kind == ArtifactKind.signed_image
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "net.signed.bin", "net.signed.hex", "signing-key.pub.pem"]
    public = (out / "signing-key.pub.pem").read_bytes()
    assert public == signing.public_key_pem(keys)
    for image in ("net.signed.bin", "net.signed.hex"):
        proc = _imgtool_verify(out / image, public, tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Image was correctly validated" in proc.stdout
        assert "1.2.3+4" in proc.stdout
    facts = signing.verify_image(out / "net.signed.bin", public)
    manifest = json.loads((out / "manifest.json").read_text())
    assert facts.version == manifest["version"] == "1.2.3+4"
    assert facts.security_counter == manifest["security_counter"] == 7
    assert facts.image_hash == manifest["image_hash_sha256"] == step.metrics["image_hash"]
    assert facts.key_fingerprint == manifest["key_fingerprint_sha256"] == signing.ensure_key(keys)
    # The fingerprint is the key hash MCUboot matches (imgtool getpubhash).
    pubhash = subprocess.run([str(IMGTOOL), "getpubhash", "-k", str(out / "signing-key.pub.pem"),
                              "-e", "raw"], capture_output=True, check=True).stdout
    assert pubhash.hex() == facts.key_fingerprint
    assert facts.header_size == manifest["header_size"] == 0x200
    # STM32 flash starts at 0x08000000; the slot follows 64 KiB of bootloader, and the
    # default slot is half of the remaining 1 MiB - 64 KiB, in whole 4 KiB sectors.
    assert manifest["load_address"] == 0x0801_0000
    assert manifest["vector_table_address"] == 0x0801_0200
    assert manifest["slot_size"] == 480 * 1024
    binary = (out / "net.signed.bin").read_bytes()
    # The header's image size is the application (ELF flash figure), the TLVs follow it.
    assert facts.image_size == manifest["payload_bytes"]
    assert manifest["elf_flash_bytes"] <= facts.image_size <= manifest["elf_flash_bytes"] + 16
    assert len(binary) == manifest["image_bytes"]
    # TLVs: protected info + counter (12), info (4), SHA256 and KEYHASH (36 each), ECDSASIG.
    assert 12 + 4 + 36 + 36 + 4 + 68 <= len(binary) - 0x200 - facts.image_size <= 12 + 4 + 36 \
        + 36 + 4 + 72
    # Application's initial SP is the top of RAM; its reset handler lies inside the slot.
    sp, pc = np.frombuffer(binary[0x200:0x208], "<u4")
    assert sp == 0x2000_0000 + 320 * 1024
    assert 0x0801_0200 < pc < 0x0801_0200 + facts.image_size and pc & 1
    assert manifest["device"]["arch"] == "cortex-m7"
    assert "-mcpu=cortex-m7" in manifest["cpu_flags"]
    assert manifest["input_kind"] == "c-source" and len(manifest["input_tree_sha256"]) == 64


def test_image_boots_from_the_slot_and_matches_the_host_build(
        float_model: CompileResult, int8_model: CompileResult, tmp_path: Path) -> None:
    need_service(shutil.which(QEMU) is not None, QEMU)
    device = get_device("mps2-an386")
    for model in (float_model, int8_model):
        step = _sign(model.directory, tmp_path, tmp_path / "keys", device, tag=model.name,
                     semihosting=True)
        text = _boot_in_qemu(step.path / f"{model.name}.signed.hex", tmp_path)
        spec = model.outputs[0]
        got = np.frombuffer(_out_bytes(text), spec.dtype).reshape(spec.shape)
        zeros = np.zeros(model.inputs[0].shape, model.inputs[0].dtype)
        want = np.asarray(HostModel(model).run(zeros)).reshape(spec.shape)
        assert np.abs(want).max() > 0  # a zero input still gives a non-trivial output
        if spec.dtype == "int8":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_flipped_byte_or_a_foreign_key_is_rejected(float_model: CompileResult,
                                                      tmp_path: Path) -> None:
    ours, theirs = tmp_path / "keys" / "ours", tmp_path / "keys" / "theirs"
    device = get_device("nrf5340-dk")
    good = _sign(float_model.directory, tmp_path, ours, device, tag="ours").path
    foreign = _sign(float_model.directory, tmp_path, theirs, device, tag="theirs").path
    public = signing.public_key_pem(ours)
    image = good / "net.signed.bin"
    data = bytearray(image.read_bytes())
    facts = signing.verify_image(image, public)

    payload = tmp_path / "payload.bin"
    flipped = bytearray(data)
    flipped[0x200 + facts.image_size // 2] ^= 0x01
    payload.write_bytes(flipped)
    with pytest.raises(InvalidInputError, match="does not match its hash"):
        signing.verify_image(payload, public)
    assert _imgtool_verify(payload, public, tmp_path).returncode != 0

    signature = tmp_path / "signature.bin"
    flipped = bytearray(data)
    flipped[-5] ^= 0x80  # inside the ECDSA signature, the last TLV
    signature.write_bytes(flipped)
    with pytest.raises(InvalidInputError, match="not made by this key"):
        signing.verify_image(signature, public)

    with pytest.raises(InvalidInputError, match="not made by this key"):
        signing.verify_image(foreign / "net.signed.bin", public)
    assert _imgtool_verify(foreign / "net.signed.bin", public, tmp_path).returncode != 0
    signing.verify_image(foreign / "net.signed.bin", signing.public_key_pem(theirs))

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidInputError, match="not an MCUboot image"):
        signing.verify_image(junk, public)


def test_rotation_keeps_old_images_verifiable_with_the_retired_key(
        float_model: CompileResult, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with pytest.raises(NotFoundError):
        signing.rotate_key(keys)
    device = get_device("mps2-an386")
    before = _sign(float_model.directory, tmp_path, keys, device, tag="before").path
    old_public = signing.public_key_pem(keys)
    old_fp, new_fp = signing.rotate_key(keys)
    assert old_fp == signing.fingerprint(old_public) and new_fp != old_fp
    assert signing.ensure_key(keys) == new_fp
    assert signing.retired_public_keys(keys) == {old_fp: old_public}
    retired = keys / "retired" / f"{old_fp}.pem"
    assert stat.S_IMODE(retired.stat().st_mode) == 0o600
    assert stat.S_IMODE(retired.parent.stat().st_mode) == 0o700
    after = _sign(float_model.directory, tmp_path, keys, device, tag="after").path
    new_public = signing.public_key_pem(keys)
    assert (after / "signing-key.pub.pem").read_bytes() == new_public
    assert json.loads((after / "manifest.json").read_text())["key_fingerprint_sha256"] == new_fp

    assert signing.verify_image(before / "net.signed.bin", old_public).key_fingerprint == old_fp
    assert signing.verify_image(after / "net.signed.bin", new_public).key_fingerprint == new_fp
    with pytest.raises(InvalidInputError):
        signing.verify_image(after / "net.signed.bin", old_public)
    with pytest.raises(InvalidInputError):
        signing.verify_image(before / "net.signed.bin", new_public)


def test_key_files_are_private_and_never_in_the_output(float_model: CompileResult,
                                                        tmp_path: Path) -> None:
    keys = tmp_path / "home" / "keys" / "p1"
    out = _sign(float_model.directory, tmp_path, keys, get_device("mps2-an386"), pad=True).path
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    private_file = keys / "signing-key.pem"
    assert stat.S_IMODE(private_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in keys.iterdir()) == [".lock", "signing-key.pem"]
    private = serialization.load_pem_private_key(private_file.read_bytes(), password=None)
    scalar = private.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    secrets = [private_file.read_bytes().strip(), der, scalar, scalar.hex().encode(),
               scalar.hex().upper().encode(), scalar[::-1]]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) == 4
    for path in files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret not in content, path.name


def test_signing_is_deterministic_and_padding_confirms(float_model: CompileResult,
                                                       tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    device = get_device("mps2-an386")
    first = _sign(float_model.directory, tmp_path, keys, device, tag="a").path
    second = _sign(float_model.directory, tmp_path, keys, device, tag="b").path
    assert (first / "net.signed.bin").read_bytes() == (second / "net.signed.bin").read_bytes()
    assert (first / "manifest.json").read_bytes() == (second / "manifest.json").read_bytes()

    padded = _sign(float_model.directory, tmp_path, keys, device, tag="c", confirm=True,
                   align=4, slot_size=64 * 1024).path
    data = (padded / "net.signed.bin").read_bytes()
    assert len(data) == 64 * 1024
    assert data[-16:] == bytes.fromhex("77c295f360d2ef7f3552500f2cb67980")  # boot magic
    assert data[-16 - 8] == 0x01  # image_ok: confirmed
    facts = signing.verify_image(padded / "net.signed.bin", signing.public_key_pem(keys))
    assert facts.security_counter is None


def test_c_bundle_input_builds_from_its_sources(float_model: CompileResult,
                                                tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    src = bundle / "src"
    src.mkdir(parents=True)
    for path in (float_model.header, float_model.source):
        shutil.copy(path, src / path.name)
    # An example program in the bundle must not clash with the image's own main.
    (src / "main.c").write_text('#include "net.h"\nint main(void) { return 0; }\n')
    # Another library's header of the same shape: the manifest's name picks the model's.
    (src / "aaa.h").write_text("typedef float aaa_input0_t;\n#define AAA_NUM_INPUTS 1\n"
                               "#define AAA_NUM_OUTPUTS 1\n")
    (bundle / "manifest.json").write_text(json.dumps({"format": "tinymlaas-c-bundle/1",
                                                      "name": "net"}))
    step = _sign(bundle, tmp_path, tmp_path / "keys", get_device("raspberry-pi-pico"),
                 kind=ArtifactKind.c_bundle, name="firmware")
    manifest = json.loads((step.path / "manifest.json").read_text())
    assert manifest["input_kind"] == "c-bundle" and manifest["model"] == "net"
    assert manifest["load_address"] == 0x1001_0000  # RP2040 XIP flash + 64 KiB
    assert "-mcpu=cortex-m0plus" in manifest["cpu_flags"]
    assert "-mfloat-abi=soft" in manifest["cpu_flags"]
    facts = signing.verify_image(step.path / "firmware.signed.bin",
                                 signing.public_key_pem(tmp_path / "keys"))
    assert facts.load_address == 0  # flash-resident (not a RAM-load image)

    empty = tmp_path / "empty"
    (empty / "src").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="No generated model header"):
        _sign(empty, tmp_path, tmp_path / "keys", get_device("raspberry-pi-pico"),
              kind=ArtifactKind.c_bundle, tag="empty")


@pytest.mark.parametrize("params", [
    {"version": "1.2.3.4"}, {"version": "v1"}, {"version": "256.0.0"},
    {"version": "1.0.65536"}, {"version": "1.0.0+4294967296"}, {"version": ""},
    {"slot_size": 2**40}, {"slot_size": 1000}, {"slot_size": 0x1000 + 100},
    {"header_size": 0x300}, {"header_size": 0x10000}, {"security_counter": -1},
    {"security_counter": 2**32}, {"align": 3}, {"load_address": 2**32},
    {"name": "../x"}, {"unknown": 1}, {"slot_size": 0x1000, "header_size": 0x1000},
    {"load_address": 0x0801_0100}, {"slot_offset": 0x100}, {"ram_address": 0x2000_0004},
    {"ram_size": 1028}, {"slot_offset": 2**40},
])
def test_bad_params_are_rejected(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SignImageParams.model_validate(params)


def test_good_versions_parse() -> None:
    assert signing.parse_version("1") == (1, 0, 0, 0)
    assert signing.parse_version("1.2.3+4") == (1, 2, 3, 4)
    assert SignImageParams(version="255.255.65535+4294967295").version.startswith("255")


def test_device_problems_are_clear(float_model: CompileResult, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with pytest.raises(InvalidInputError, match="target device"):
        _sign(float_model.directory, tmp_path, keys, None)
    with pytest.raises(UnsupportedModelError, match="cortex-m0, cortex-m0plus") as info:
        _sign(float_model.directory, tmp_path, keys, get_device("raspberry-pi-4"))
    assert "cortex-m55" in info.value.details["supported"]
    with pytest.raises(InvalidInputError, match="does not fit"):
        _sign(float_model.directory, tmp_path, keys, get_device("stm32f746-discovery"),
              slot_size=4 * 1024 * 1024)
    # 4 KiB minus header, TLVs and the swap trailer leaves 2128 bytes (align 1): the
    # model's 3.2 KB of code and constants does not fit; with align 8 nothing does.
    with pytest.raises(InvalidInputError, match="does not fit the device"):
        _sign(float_model.directory, tmp_path, keys, get_device("mps2-an386"),
              slot_size=4 * 1024, align=1)
    with pytest.raises(InvalidInputError, match="leaves no room"):
        _sign(float_model.directory, tmp_path, keys, get_device("mps2-an386"),
              slot_size=4 * 1024)
    assert not (tmp_path / "run" / "out" / "signed-image" / "net.signed.bin").exists()


def test_ensure_key_twice_gives_the_same_key(tmp_path: Path) -> None:
    first = signing.ensure_key(tmp_path / "k")
    assert signing.ensure_key(tmp_path / "k") == first
    assert signing.fingerprint(signing.public_key_pem(tmp_path / "k")) == first
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    with pytest.raises(NotFoundError):
        signing.public_key_pem(tmp_path / "none")


def _ensure_after(barrier: multiprocessing.synchronize.Barrier, key_dir: str,
                  results: multiprocessing.Queue) -> None:
    barrier.wait()
    results.put(signing.ensure_key(Path(key_dir)))


def test_ensure_key_from_concurrent_processes_makes_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = 6
    barrier, results = context.Barrier(workers), context.Queue()
    key_dir = tmp_path / "shared"
    processes = [context.Process(target=_ensure_after, args=(barrier, str(key_dir), results))
                 for _ in range(workers)]
    for process in processes:
        process.start()
    fingerprints = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(set(fingerprints)) == 1
    assert fingerprints[0] == signing.ensure_key(key_dir)
    assert sorted(os.listdir(key_dir)) == [".lock", "signing-key.pem"]


def test_explicit_slot_placement_reaches_the_link_and_the_hex(float_model: CompileResult,
                                                              tmp_path: Path) -> None:
    from intelhex import IntelHex

    step = _sign(float_model.directory, tmp_path, tmp_path / "keys", get_device("mps2-an386"),
                 slot_offset=0x2_0000, load_address=0x0004_0000, header_size=0x400,
                 slot_size=0x2_0000)
    manifest = json.loads((step.path / "manifest.json").read_text())
    assert (manifest["load_address"], manifest["vector_table_address"]) == (0x4_0000, 0x4_0400)
    image = IntelHex(str(step.path / "net.signed.hex"))
    assert image.minaddr() == 0x4_0000
    assert image.tobinstr() == (step.path / "net.signed.bin").read_bytes()
    reset = int.from_bytes(image.tobinstr()[0x404:0x408], "little")
    assert 0x4_0400 < reset < 0x4_0400 + manifest["payload_bytes"]
