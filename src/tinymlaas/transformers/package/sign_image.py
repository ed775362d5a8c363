"""``sign-image``: generated C to an MCUboot-signed firmware image for the run's device.

The model (``c-source`` from compile-c, or a ``c-bundle`` from package-c) is built into a
bare-metal application for the device's Cortex-M CPU, linked for the MCUboot primary slot,
and signed with the project's key (see :mod:`tinymlaas.installers.signing`). The output
directory holds ``<name>.signed.bin`` (and ``.hex``), ``signing-key.pub.pem`` and
``manifest.json``; never the private key.

Image layout (what imgtool writes and MCUboot checks)::

    slot start ──► image header (header_size bytes, first 32 used):
                     magic 0x96f3b83d, load address, header size, protected TLV size,
                     image size, flags, version major.minor.revision+build
                   application: vector table, code, constants, .data image
                   protected TLVs (0x6908): SEC_CNT security counter (when given)
                   TLVs (0x6907): SHA256 of header + application + protected TLVs,
                     KEYHASH (SHA-256 of the public key DER = the key fingerprint),
                     ECDSASIG (ECDSA P-256 over that hash)
                   ... (pad: erased bytes, then the swap trailer and its magic at the end)
    slot end

What a device needs: an MCUboot bootloader built with ECDSA P-256 signatures
(``CONFIG_BOOT_SIGNATURE_TYPE_ECDSA_P256`` in Zephyr/NCS) whose key table holds the
project's public key, made from ``signing-key.pub.pem`` with
``imgtool getpub -k signing-key.pub.pem`` (C array, ``-e lang-c``). Its flash map must put
the primary slot at ``load_address`` with ``slot_size`` bytes, and its header size, write
alignment and anti-rollback setting (``MCUBOOT_HW_ROLLBACK_PROT`` with the security
counter) must match the manifest. After a key rotation, images signed by the old key keep
verifying with the retired public key until devices trust the new one.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Literal, cast

from pydantic import BaseModel, Field, field_validator, model_validator

from tinymlaas.domain import ArtifactKind, Device
from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer

if TYPE_CHECKING:
    from tinymlaas.installers.firmware import SlotLayout

__all__ = ["SignImage", "SignImageParams"]

_MAX_SLOT = 64 * 1024 * 1024
_ADDRESS_MAX = 2**32 - 1


class SignImageParams(Params):
    version: str = Field(default="1.0.0", description="Image version major.minor.revision"
                         "+build (8, 8, 16 and 32 bits).")
    security_counter: int | None = Field(default=None, ge=0, le=2**32 - 1, description=(
        "Anti-rollback counter written as a protected TLV; MCUboot with hardware rollback "
        "protection refuses images with a lower counter than the installed one."))
    header_size: int = Field(default=0x200, ge=0x80, le=0x8000, description=(
        "Bytes before the vector table for the MCUboot header (a power of two, >= 0x80 so "
        "the vector table stays aligned)."))
    slot_size: int | None = Field(default=None, ge=0x1000, le=_MAX_SLOT, description=(
        "Primary slot size in bytes (multiple of 1 KiB); default: half the flash after "
        "slot_offset, in whole 4 KiB sectors."))
    slot_offset: int = Field(default=0x10000, ge=0, le=_MAX_SLOT, description=(
        "Offset of the primary slot in flash: the room for MCUboot itself (default 64 KiB)."))
    load_address: int | None = Field(default=None, ge=0, le=_ADDRESS_MAX, description=(
        "Address of the primary slot in the CPU's memory map; default: the device's flash "
        "base (0x08000000 for STM32, 0x10000000 for RP2040, else 0) + slot_offset."))
    ram_address: int = Field(default=0x2000_0000, ge=0, le=_ADDRESS_MAX,
                             description="Start of the RAM the application uses.")
    ram_size: int | None = Field(default=None, ge=1024, le=_ADDRESS_MAX, description=(
        "Bytes of RAM at ram_address (default: the device's RAM)."))
    align: Literal[1, 2, 4, 8, 16, 32] = Field(default=8, description="Flash write "
                                               "alignment (imgtool --align).")
    pad: bool = Field(default=False, description="Pad the image to the slot size with the "
                      "swap trailer (for writing straight into the secondary slot).")
    confirm: bool = Field(default=False, description="Mark the image confirmed (implies pad).")
    hex: bool = Field(default=True, description="Also write an Intel HEX at load_address.")
    optimize: Literal["-Os", "-O2", "-O3"] = "-Os"
    semihosting: bool = Field(default=False, description="Print the outputs and exit "
                              "through semihosting: only with a debugger or an emulator.")
    name: str | None = Field(default=None, description="Output file name (default: the "
                             "model's C name).")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        from tinymlaas.installers.signing import parse_version

        parse_version(value)
        return value.strip()

    @field_validator("header_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of two (0x80 ... 0x8000)")
        return value

    @field_validator("slot_size")
    @classmethod
    def _kib(cls, value: int | None) -> int | None:
        if value is not None and value % 1024:
            raise ValueError("must be a multiple of 1 KiB")
        return value

    @field_validator("slot_offset", "load_address")
    @classmethod
    def _sector_aligned(cls, value: int | None) -> int | None:
        if value is not None and value % 1024:
            raise ValueError("must be a multiple of 1 KiB (slots start on a flash sector)")
        return value

    @field_validator("ram_address", "ram_size")
    @classmethod
    def _stack_aligned(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError("must be a multiple of 8 (the stack starts at the end of RAM)")
        return value

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", value):
            raise ValueError("must be a plain file name (letters, digits, _ . -)")
        return value

    @model_validator(mode="after")
    def _slot_holds_header(self) -> SignImageParams:
        if self.slot_size is not None and self.slot_size <= self.header_size:
            raise ValueError("slot_size must be larger than header_size")
        return self


class SignImage(Transformer):
    name = "sign-image"
    version = "1"
    summary = "MCUboot-signed firmware image for the run's Cortex-M device (imgtool)."
    Params = SignImageParams
    accepts = frozenset({ArtifactKind.c_source, ArtifactKind.c_bundle})
    produces = ArtifactKind.signed_image
    needs = "none"
    uses_device = True
    signs = True

    def check_device(self, device: Device | None, params: BaseModel) -> None:
        from tinymlaas.errors import InvalidInputError
        from tinymlaas.installers import firmware

        if device is None:
            raise InvalidInputError("it builds firmware for the run's device; give the run "
                                    "a Cortex-M device")
        firmware.cpu_flags(device)
        _layout(cast(SignImageParams, params), device)

    def run(self, ctx: StepContext) -> StepOutput:
        from tinymlaas.errors import InvalidInputError
        from tinymlaas.installers import firmware, signing

        params: SignImageParams = ctx.params
        device = ctx.require_device()
        if ctx.key_dir is None:
            raise InvalidInputError("sign-image needs the project's key directory; run it "
                                    "through the engine of a project.")
        flags = firmware.cpu_flags(device)
        layout = _layout(params, device)
        ctx.progress(0.05, "collecting the model's sources")
        model = firmware.collect_sources(ctx.input_path, ctx.input_kind)
        ctx.progress(0.2, f"building for {device.arch}")
        build = firmware.build_firmware(model, layout, flags, ctx.work_dir / "firmware",
                                        optimize=params.optimize,
                                        semihosting=params.semihosting)
        ctx.progress(0.7, "signing")
        out = ctx.out_dir / "signed-image"
        out.mkdir(parents=True, exist_ok=True)
        base = params.name or model.name
        signed = signing.sign_image(
            build.binary, out / f"{base}.signed.bin", ctx.key_dir, version=params.version,
            header_size=params.header_size, slot_size=layout.slot_size, align=params.align,
            security_counter=params.security_counter, pad=params.pad, confirm=params.confirm,
            hex_address=layout.slot_address if params.hex else None)
        public = signed.public_key_pem  # the key that signed, even if rotated meanwhile
        (out / "signing-key.pub.pem").write_bytes(public)
        check = signing.verify_image(signed.path, public)
        manifest = {
            "format": "mcuboot", "image": signed.path.name,
            "hex": signed.hex_path.name if signed.hex_path else None,
            "version": params.version, "security_counter": params.security_counter,
            "image_hash_sha256": signed.image_hash, "image_bytes": signed.image_bytes,
            "payload_bytes": signed.payload_bytes,
            "key_type": signing.KEY_TYPE, "key_fingerprint_sha256": signed.key_fingerprint,
            "public_key": "signing-key.pub.pem",
            "header_size": params.header_size, "slot_size": layout.slot_size,
            "slot_offset": params.slot_offset, "load_address": layout.slot_address,
            "vector_table_address": layout.vector_address, "align": params.align,
            "padded": params.pad or params.confirm, "confirmed": params.confirm,
            "device": {"name": device.name, "arch": device.arch,
                       "flash_kb": device.flash_kb, "ram_kb": device.ram_kb},
            "cpu_flags": list(flags), "optimize": params.optimize,
            "semihosting": params.semihosting, "model": model.name,
            "elf_flash_bytes": build.sizes.flash_bytes, "elf_ram_bytes": build.sizes.ram_bytes,
            "elf_sections": {name: size for name, size in build.sizes.sections.items()
                             if not name.startswith((".debug", ".comment", ".ARM.attr"))},
            "input_kind": ctx.input_kind.value,
            "input_tree_sha256": firmware.tree_sha256(ctx.input_path),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True)
                                           + "\n", encoding="utf-8")
        ctx.log.info("signed %s %s for %s: %d B, key %s", signed.path.name, params.version,
                     device.name, signed.image_bytes, signed.key_fingerprint[:16])
        metrics = {"image_bytes": signed.image_bytes, "elf_flash_bytes": build.sizes.flash_bytes,
                   "elf_ram_bytes": build.sizes.ram_bytes, "slot_size": layout.slot_size,
                   "slot_used_fraction": round(signed.image_bytes / layout.slot_size, 6),
                   "key_fingerprint": signed.key_fingerprint, "image_hash": check.image_hash}
        return StepOutput(out, self.produces, metrics)


def _layout(params: SignImageParams, device: Device) -> SlotLayout:
    from tinymlaas.errors import InvalidInputError
    from tinymlaas.installers.firmware import SlotLayout, default_flash_base, trailer_reserve

    flash = device.flash_kb * 1024
    if params.slot_offset >= flash:
        raise InvalidInputError(f"slot_offset 0x{params.slot_offset:X} is past the end of "
                                f"{device.name}'s {device.flash_kb} KiB flash.")
    slot_size = params.slot_size
    if slot_size is None:
        slot_size = min(_MAX_SLOT, (flash - params.slot_offset) // 2 // 4096 * 4096)
        if slot_size <= params.header_size:
            raise InvalidInputError(f"{device.name}'s flash leaves no room for two slots after "
                                    "slot_offset; give slot_size and slot_offset.")
    if params.slot_offset + slot_size > flash:
        raise InvalidInputError(
            f"A {slot_size}-byte slot at offset 0x{params.slot_offset:X} does not fit "
            f"{device.name}'s {device.flash_kb} KiB flash; give a smaller slot_size.",
            {"flash_bytes": flash, "slot_size": slot_size})
    address = params.load_address
    if address is None:
        address = default_flash_base(device) + params.slot_offset
    if address + slot_size > 2**32:
        raise InvalidInputError("The slot runs past the 4 GiB address space; lower "
                                "load_address.")
    return SlotLayout(slot_address=address, header_size=params.header_size,
                      slot_size=slot_size, reserve=trailer_reserve(params.align),
                      ram_address=params.ram_address,
                      ram_size=min(params.ram_size or device.ram_kb * 1024,
                                   2**32 - params.ram_address))
