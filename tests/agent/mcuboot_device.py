"""An in-process MCU for the gateway tests: MCUboot (swap using scratch, with revert) behind
an SMP server (Zephyr MCUmgr's image and OS groups) on UDP 127.0.0.1.

Flash (NOR semantics: a write only lands on erased bytes, 0xFF; erases are per sector)::

    primary slot   [ sector 0 | sector 1 | ... | sector n-2 | trailer sector ]
    secondary slot [ sector 0 | sector 1 | ... | sector n-2 | trailer sector ]
    scratch        [ one sector ]
    swap status    [ one sector: swap type, one byte per (sector, step), status magic ]

A slot's trailer (the last 40 bytes of its last sector, as MCUboot's): ``swap-info`` at
-40, ``copy-done`` at -32, ``image-ok`` at -24 (0x01 set, 0xFF unset) and the 16-byte
``magic`` at the end. The images live in the first n-1 sectors.

What the bootloader decides at each boot (MCUboot's ``boot_swap_type`` table, reduced):

- a swap whose status has its magic is unfinished: it resumes where the status says;
- secondary magic good: TEST (image-ok unset) or PERM (set), after checking the secondary
  image's hash, key hash and ECDSA P-256 signature against the trusted key (an image that
  fails is erased and nothing is swapped);
- primary magic good, copy-done set, image-ok unset (a test image nobody confirmed): REVERT;
- else NONE.

A swap writes the status (type, then magic), then for every image sector three steps,
each an erase and a write followed by its status byte: secondary sector to scratch,
primary sector to secondary, scratch to primary. It ends by erasing the secondary trailer,
rewriting the primary one (image-ok for PERM and REVERT, copy-done, magic) and erasing the
status. Every step can be redone, so a power cut anywhere (``cut_swap_after``: the swap
stops after that many flash operations, and the device stays off until
:meth:`McubootDevice.power_on`) resumes to the same whole images.

The simulated application: firmware whose payload holds :data:`UNHEALTHY` runs but
refuses the health echo; one that holds :data:`CRASH` hangs at boot, so its watchdog
resets the device (and MCUboot reverts it, being unconfirmed); one that holds
:data:`SELF_CONFIRM` confirms its own image at boot, as many Zephyr applications do.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.hashes import SHA256
from smp import error as smperror
from smp import header as smphdr
from smp import image_management as smpimg
from smp import os_management as smpos

BOOT_MAGIC = bytes.fromhex("77c295f360d2ef7f3552500f2cb67980")
IMAGE_MAGIC = 0x96F3B83D
TLV_INFO_MAGIC = 0x6907
TLV_PROT_INFO_MAGIC = 0x6908
TLV_KEYHASH = 0x01
TLV_SHA256 = 0x10
TLV_ECDSA_SIG = 0x22
UNHEALTHY = b"SIM-APP-UNHEALTHY"
CRASH = b"SIM-APP-CRASH"
SELF_CONFIRM = b"SIM-APP-SELF-CONFIRM"
FLAG_SET = 0x01

_SWAP_INFO, _COPY_DONE, _IMAGE_OK, _MAGIC = -40, -32, -24, -16
_STATUS_ENTRIES = 8
_STEPS = 3
_MAX_WATCHDOG_RESETS = 4


class SwapType(IntEnum):
    NONE = 1
    TEST = 2
    PERM = 3
    REVERT = 4


class PowerCut(Exception):
    """The power went off in the middle of a flash operation sequence."""


@dataclass(frozen=True)
class ImageInfo:
    version: str
    hash: bytes
    size: int
    valid: bool


def parse_image(data: bytes | bytearray, key: ec.EllipticCurvePublicKey) -> ImageInfo | None:
    """The image at the start of ``data`` (None if there is none), checked as MCUboot does:
    the SHA256 TLV over header + payload + protected TLVs, KEYHASH = the trusted key,
    the ECDSA signature over that hash."""
    data = bytes(data)
    if len(data) < 32:
        return None
    magic, _load, hdr_size, prot_size, img_size, _flags = struct.unpack_from("<IIHHII", data)
    if magic != IMAGE_MAGIC:
        return None
    major, minor, revision, build = struct.unpack_from("<BBHI", data, 20)
    signed_end = hdr_size + img_size + prot_size
    if signed_end + 4 > len(data):
        return None
    if prot_size and struct.unpack_from("<H", data, hdr_size + img_size)[0] \
            != TLV_PROT_INFO_MAGIC:
        return None
    info_magic, total = struct.unpack_from("<HH", data, signed_end)
    end = signed_end + total
    if info_magic != TLV_INFO_MAGIC or end > len(data):
        return None
    tlvs: dict[int, bytes] = {}
    pos = signed_end + 4
    while pos + 4 <= end:
        kind, length = struct.unpack_from("<HH", data, pos)
        tlvs.setdefault(kind, data[pos + 4:pos + 4 + length])
        pos += 4 + length
    digest = tlvs.get(TLV_SHA256)
    if digest is None or len(digest) != 32:
        return None
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    valid = (hashlib.sha256(data[:signed_end]).digest() == digest
             and tlvs.get(TLV_KEYHASH) == hashlib.sha256(der).digest())
    if valid:
        try:
            key.verify(tlvs.get(TLV_ECDSA_SIG, b""), digest, ec.ECDSA(Prehashed(SHA256())))
        except InvalidSignature:
            valid = False
    version = f"{major}.{minor}.{revision}" + (f".{build}" if build else "")
    return ImageInfo(version=version, hash=digest, size=end, valid=valid)


class McubootDevice:
    """The device: flash, bootloader, application and SMP server (a thread).

    Args:
        public_key_pem: The key MCUboot trusts.
        factory_image: The signed image programmed into the primary slot at the factory
            (no trailer: permanent).
        sector_size: Flash sector size.
        slot_sectors: Sectors per slot, the last one for the trailer.
        reboot_s: How long a reset keeps the device silent before the bootloader runs.
    """

    def __init__(self, public_key_pem: bytes, factory_image: bytes, *, sector_size: int = 1024,
                 slot_sectors: int = 12, reboot_s: float = 0.05) -> None:
        key = serialization.load_pem_public_key(public_key_pem)
        assert isinstance(key, ec.EllipticCurvePublicKey)
        self.key = key
        self.sector = sector_size
        self.slot_size = sector_size * slot_sectors
        self.image_sectors = slot_sectors - 1
        self.image_area = self.sector * self.image_sectors
        assert len(factory_image) <= self.image_area
        assert _STATUS_ENTRIES + self.image_sectors * _STEPS <= sector_size - 16
        self.primary = bytearray(b"\xff" * self.slot_size)
        self.secondary = bytearray(b"\xff" * self.slot_size)
        self.scratch = bytearray(b"\xff" * sector_size)
        self.status = bytearray(b"\xff" * sector_size)
        self.primary[:len(factory_image)] = factory_image
        self.reboot_s = reboot_s
        self.lock = threading.RLock()
        self.powered = False
        self.running: ImageInfo | None = None
        self.healthy = False
        #: Stop the next swap after this many flash operations (then disarmed).
        self.cut_swap_after: int | None = None
        self.power_lost = threading.Event()
        self.boots = 0
        self.swaps: list[SwapType] = []
        self.resumed_swaps = 0
        self.refused_images = 0
        self.power_cuts = 0
        self.last_swap_ops = 0
        self.watchdog_resets = 0
        self.requests: list[tuple[int, int, int]] = []  # (group, command, op) received
        self._swapping = False
        self._swap_ops = 0
        self._upload: dict[str, Any] | None = None
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.02)
        self.address = f"udp:127.0.0.1:{self.sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, name="mcuboot-device", daemon=True)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> McubootDevice:
        self.power_on()
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> McubootDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def power_on(self) -> bool:
        """Boot from off (after a power cut); True if the device came up."""
        with self.lock:
            if self.powered:
                return True
            self.power_lost.clear()
            return self._boot_up()

    def reboot(self) -> bool:
        """A reset, as the SMP reset request or a reset button does."""
        with self.lock:
            self.powered = False
            return self._boot_up()

    def _boot_up(self) -> bool:
        try:
            self._boot()
        except PowerCut:
            self.powered = False
            self.running = None
            self.power_cuts += 1
            self.power_lost.set()
            return False
        self.powered = True
        return True

    # ------------------------------------------------------------------ what tests read

    def image_in(self, slot: int) -> ImageInfo | None:
        area = self.primary if slot == 0 else self.secondary
        with self.lock:
            return parse_image(area[:self.image_area], self.key)

    def image_area_of(self, slot: int) -> bytes:
        with self.lock:
            return bytes((self.primary if slot == 0 else self.secondary)[:self.image_area])

    def trailer(self, slot: int) -> dict[str, bool]:
        with self.lock:
            area = self.primary if slot == 0 else self.secondary
            return {"magic": bytes(area[_MAGIC:]) == BOOT_MAGIC,
                    "image_ok": area[_IMAGE_OK] == FLAG_SET,
                    "copy_done": area[_COPY_DONE] == FLAG_SET}

    @property
    def swap_in_progress(self) -> bool:
        return bytes(self.status[-16:]) == BOOT_MAGIC

    # ------------------------------------------------------------------ flash

    def _op(self) -> None:
        if not self._swapping:
            return
        if self.cut_swap_after is not None and self._swap_ops >= self.cut_swap_after:
            self.cut_swap_after = None
            raise PowerCut
        self._swap_ops += 1

    def _erase(self, area: bytearray, start: int, length: int) -> None:
        assert start % self.sector == 0 and length % self.sector == 0
        self._op()
        area[start:start + length] = b"\xff" * length

    def _write(self, area: bytearray, offset: int, data: bytes) -> None:
        if offset < 0:
            offset += len(area)
        assert all(b == 0xFF for b in area[offset:offset + len(data)]), \
            f"write to unerased flash at {offset}"
        self._op()
        area[offset:offset + len(data)] = data

    def _trailer_sector(self) -> int:
        return self.slot_size - self.sector

    # ------------------------------------------------------------------ bootloader

    def _swap_type(self) -> SwapType:
        sec, pri = self.secondary, self.primary
        if bytes(sec[_MAGIC:]) == BOOT_MAGIC:
            return SwapType.PERM if sec[_IMAGE_OK] == FLAG_SET else SwapType.TEST
        if (bytes(pri[_MAGIC:]) == BOOT_MAGIC and pri[_COPY_DONE] == FLAG_SET
                and pri[_IMAGE_OK] != FLAG_SET):
            return SwapType.REVERT
        return SwapType.NONE

    def _boot(self) -> None:
        self.boots += 1
        self.running = None
        if self.swap_in_progress:
            self.resumed_swaps += 1
            self._swap(SwapType(self.status[0]), resume=True)
        else:
            swap_type = self._swap_type()
            if swap_type in (SwapType.TEST, SwapType.PERM):
                info = parse_image(self.secondary[:self.image_area], self.key)
                if info is None or not info.valid:
                    self.refused_images += 1
                    self.secondary[:] = b"\xff" * self.slot_size
                    swap_type = SwapType.NONE
            if swap_type is not SwapType.NONE:
                self._swap(swap_type, resume=False)
        info = parse_image(self.primary[:self.image_area], self.key)
        if info is None or not info.valid:
            return  # MCUboot does not start an invalid image: the device stays silent
        payload = bytes(self.primary[:info.size])
        if CRASH in payload and self.watchdog_resets < _MAX_WATCHDOG_RESETS:
            self.watchdog_resets += 1  # the application hangs; its watchdog resets the MCU
            self._boot()
            return
        self.running = info
        self.healthy = UNHEALTHY not in payload and CRASH not in payload
        if SELF_CONFIRM in payload:  # boot_write_img_confirmed() at start-up
            self._confirm_running()

    def _confirm_running(self) -> None:
        trailer = self.trailer(0)
        if trailer["magic"] and not trailer["image_ok"]:
            self._write(self.primary, _IMAGE_OK, bytes([FLAG_SET]))

    def _swap(self, swap_type: SwapType, *, resume: bool) -> None:
        self._swapping, self._swap_ops = True, 0
        try:
            if not resume:
                self._erase(self.status, 0, self.sector)
                self._write(self.status, 0, bytes([swap_type]))
                self._write(self.status, -16, BOOT_MAGIC)
            for index in range(self.image_sectors):
                for step in range(_STEPS):
                    entry = _STATUS_ENTRIES + index * _STEPS + step
                    if self.status[entry] == FLAG_SET:
                        continue
                    self._swap_step(index, step)
                    self._write(self.status, entry, bytes([FLAG_SET]))
            trailer = self._trailer_sector()
            self._erase(self.secondary, trailer, self.sector)
            self._erase(self.primary, trailer, self.sector)
            self._write(self.primary, _SWAP_INFO, bytes([swap_type]))
            if swap_type in (SwapType.PERM, SwapType.REVERT):
                self._write(self.primary, _IMAGE_OK, bytes([FLAG_SET]))
            self._write(self.primary, _COPY_DONE, bytes([FLAG_SET]))
            self._write(self.primary, _MAGIC, BOOT_MAGIC)
            self._erase(self.status, 0, self.sector)
        finally:
            self._swapping = False
        self.last_swap_ops = self._swap_ops
        self.swaps.append(swap_type)

    def swap_ops(self, swap_type: SwapType) -> int:
        """Flash operations in a whole swap of this type (the range of ``cut_swap_after``):
        3 to start, 3 steps of 3 per sector, then 6 (7 with image-ok) to finish."""
        image_ok = swap_type in (SwapType.PERM, SwapType.REVERT)
        return 3 + self.image_sectors * _STEPS * 3 + 6 + int(image_ok)

    def _swap_step(self, index: int, step: int) -> None:
        start, end = index * self.sector, (index + 1) * self.sector
        if step == 0:
            self._erase(self.scratch, 0, self.sector)
            self._write(self.scratch, 0, bytes(self.secondary[start:end]))
        elif step == 1:
            self._erase(self.secondary, start, self.sector)
            self._write(self.secondary, start, bytes(self.primary[start:end]))
        else:
            self._erase(self.primary, start, self.sector)
            self._write(self.primary, start, bytes(self.scratch))

    # ------------------------------------------------------------------ SMP server

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                frame, peer = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            with self.lock:
                if not self.powered or self.running is None:
                    continue  # off, or no application: nobody answers
                try:
                    reply, reset = self._handle(frame)
                except Exception as exc:  # a malformed request: the server drops it
                    print(f"mcuboot-device: dropped a request: {exc!r}")
                    continue
            if reply is not None:
                self.sock.sendto(reply, peer)
            if reset:
                with self.lock:
                    self.powered = False
                time.sleep(self.reboot_s)
                self._drain()
                with self.lock:
                    self._boot_up()

    def _drain(self) -> None:
        """Requests that came while the device was off are lost."""
        while True:
            try:
                self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                return

    def _handle(self, frame: bytes) -> tuple[bytes | None, bool]:
        header = smphdr.Header.loads(frame[:smphdr.Header.SIZE])
        body = frame[smphdr.Header.SIZE:smphdr.Header.SIZE + header.length]
        request: dict[str, Any] = cbor2.loads(body) if body else {}
        group, command, op = int(header.group_id), int(header.command_id), int(header.op)
        self.requests.append((group, command, op))
        seq = header.sequence
        write = op == int(smphdr.OP.WRITE)
        if group == smphdr.GroupId.OS_MANAGEMENT:
            if command == smphdr.CommandId.OSManagement.MCUMGR_PARAMETERS:
                return smpos.MCUMgrParametersReadResponse(sequence=seq, buf_size=2048,
                                                          buf_count=4).BYTES, False
            if command == smphdr.CommandId.OSManagement.ECHO and write:
                if not self.healthy:
                    return _error_frame(header, {"rc": int(smperror.MGMT_ERR.EBADSTATE),
                                                 "rsn": "application unhealthy"}), False
                return smpos.EchoWriteResponse(sequence=seq, r=request["d"]).BYTES, False
            if command == smphdr.CommandId.OSManagement.RESET and write:
                return smpos.ResetWriteResponse(sequence=seq).BYTES, True
        if group == smphdr.GroupId.IMAGE_MANAGEMENT:
            if command == smphdr.CommandId.ImageManagement.STATE:
                if write:
                    failure = self._state_write(request)
                    if failure is not None:
                        return self._image_error(header, failure), False
                    return smpimg.ImageStatesWriteResponse(
                        sequence=seq, images=self._states()).BYTES, False
                return smpimg.ImageStatesReadResponse(sequence=seq,
                                                      images=self._states()).BYTES, False
            if command == smphdr.CommandId.ImageManagement.UPLOAD and write:
                return self._upload_chunk(header, request), False
        return None, False

    def _image_error(self, header: smphdr.Header, rc: smpimg.IMG_MGMT_ERR) -> bytes:
        return _error_frame(header, {"err": {"group": int(smphdr.GroupId.IMAGE_MANAGEMENT),
                                             "rc": int(rc)}})

    def _states(self) -> list[smpimg.ImageState]:
        states = []
        primary = parse_image(self.primary[:self.image_area], self.key)
        secondary = parse_image(self.secondary[:self.image_area], self.key)
        next_swap = self._swap_type()
        if primary is not None:
            trailer = self.trailer(0)
            states.append(smpimg.ImageState(
                image=0, slot=0, version=primary.version, hash=primary.hash, bootable=True,
                active=True, confirmed=not trailer["magic"] or trailer["image_ok"]))
        if secondary is not None:
            states.append(smpimg.ImageState(
                image=0, slot=1, version=secondary.version, hash=secondary.hash,
                bootable=True, pending=next_swap in (SwapType.TEST, SwapType.PERM),
                permanent=next_swap is SwapType.PERM,
                confirmed=next_swap is SwapType.REVERT))
        return states

    def _state_write(self, request: dict[str, Any]) -> smpimg.IMG_MGMT_ERR | None:
        digest = request.get("hash")
        confirm = bool(request.get("confirm", False))
        primary = parse_image(self.primary[:self.image_area], self.key)
        secondary = parse_image(self.secondary[:self.image_area], self.key)
        if confirm and (digest is None or (primary is not None and digest == primary.hash)):
            self._confirm_running()
            return None
        if secondary is None or digest != secondary.hash:
            if primary is not None and digest == primary.hash:
                return smpimg.IMG_MGMT_ERR.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED
            return smpimg.IMG_MGMT_ERR.NO_IMAGE
        if bytes(self.secondary[_MAGIC:]) != BOOT_MAGIC:
            self._write(self.secondary, _SWAP_INFO, bytes([SwapType.PERM if confirm
                                                           else SwapType.TEST]))
            if confirm:
                self._write(self.secondary, _IMAGE_OK, bytes([FLAG_SET]))
            self._write(self.secondary, _MAGIC, BOOT_MAGIC)
        return None

    def _upload_chunk(self, header: smphdr.Header, request: dict[str, Any]) -> bytes:
        seq = header.sequence
        offset, data = int(request["off"]), bytes(request["data"])
        if offset == 0:
            length = int(request.get("len", 0))
            if length > self.image_area:
                return self._image_error(header, smpimg.IMG_MGMT_ERR.INVALID_IMAGE_TOO_LARGE)
            if len(data) < 4 or struct.unpack_from("<I", data)[0] != IMAGE_MAGIC:
                return self._image_error(header, smpimg.IMG_MGMT_ERR.INVALID_IMAGE_HEADER_MAGIC)
            self.secondary[:] = b"\xff" * self.slot_size  # erase the whole slot first
            self._upload = {"len": length, "sha": request.get("sha"), "next": 0}
        upload = self._upload
        if upload is None:
            return self._image_error(header, smpimg.IMG_MGMT_ERR.INVALID_OFFSET)
        if offset != upload["next"]:
            return smpimg.ImageUploadWriteResponse(sequence=seq, off=upload["next"]).BYTES
        if offset + len(data) > upload["len"]:
            return self._image_error(header, smpimg.IMG_MGMT_ERR.INVALID_IMAGE_DATA_OVERRUN)
        self._write(self.secondary, offset, data)
        upload["next"] = offset + len(data)
        if upload["next"] < upload["len"]:
            return smpimg.ImageUploadWriteResponse(sequence=seq, off=upload["next"]).BYTES
        self._upload = None
        match = None
        if upload["sha"] is not None:
            match = hashlib.sha256(bytes(self.secondary[:upload["len"]])).digest() \
                == bytes(upload["sha"])
        return smpimg.ImageUploadWriteResponse(sequence=seq, off=upload["next"],
                                               match=match).BYTES


def _error_frame(request: smphdr.Header, body: dict[str, Any]) -> bytes:
    """An SMP error answer (version 1 ``rc``/``rsn`` or version 2 ``err``) to ``request``."""
    data = cbor2.dumps(body, canonical=True)
    op = smphdr.OP.WRITE_RSP if request.op == smphdr.OP.WRITE else smphdr.OP.READ_RSP
    return bytes(smphdr.Header(op=op, version=request.version, flags=smphdr.Flag(0),
                               length=len(data), group_id=request.group_id,
                               sequence=request.sequence,
                               command_id=request.command_id)) + data


# ---------------------------------------------------------------------- signed packages


@dataclass(frozen=True)
class Package:
    """A signed-image package as sign-image writes it, and what tests compare against."""

    zip_path: Path
    directory: Path
    image: bytes
    image_hash: str
    version: str


def firmware(tag: bytes, size: int) -> bytes:
    """A synthetic application binary: a vector table (initial stack pointer, reset vector),
    then deterministic bytes that hold ``tag`` (a marker such as :data:`UNHEALTHY`)."""
    vectors = struct.pack("<II", 0x2000_8000, 0x0001_0201)
    fill = hashlib.shake_256(b"firmware:" + tag).digest(size - len(vectors) - len(tag))
    return vectors + tag + fill


def signed_package(root: Path, key_dir: Path, *, name: str, version: str, marker: bytes = b"",
                   size: int = 3000, slot_size: int = 12 * 1024,
                   confirm: bool = False) -> Package:
    """Sign ``firmware(name + marker)`` with the project key in ``key_dir`` and package it
    like sign-image: ``<name>.signed.bin``, ``signing-key.pub.pem``, ``manifest.json``."""
    from tinymlaas.artifacts.local import zip_directory
    from tinymlaas.installers import signing

    work = root / name
    out = work / "signed-image"
    out.mkdir(parents=True)
    raw = work / f"{name}.bin"
    raw.write_bytes(firmware(name.encode() + marker, size))
    signed = signing.sign_image(raw, out / f"{name}.signed.bin", key_dir, version=version,
                                header_size=0x200, slot_size=slot_size, confirm=confirm)
    (out / "signing-key.pub.pem").write_bytes(signed.public_key_pem)
    manifest = {
        "format": "mcuboot", "image": signed.path.name, "hex": None, "version": version,
        "security_counter": None, "image_hash_sha256": signed.image_hash,
        "image_bytes": signed.image_bytes, "payload_bytes": signed.payload_bytes,
        "key_type": signing.KEY_TYPE, "key_fingerprint_sha256": signed.key_fingerprint,
        "public_key": "signing-key.pub.pem", "header_size": 0x200, "slot_size": slot_size,
        "slot_offset": 0x10000, "load_address": 0x10000, "align": 8,
        "padded": confirm, "confirmed": confirm,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    zip_path = work / "signed-image.zip"
    zip_directory(out, zip_path)
    return Package(zip_path=zip_path, directory=out, image=signed.path.read_bytes(),
                   image_hash=signed.image_hash, version=version)


def power_back_on(device: McubootDevice, after_s: float = 0.3) -> threading.Thread:
    """Once the device loses power, switch it on again ``after_s`` later (a thread)."""

    def run() -> None:
        if device.power_lost.wait(timeout=60):
            time.sleep(after_s)
            device.power_on()

    thread = threading.Thread(target=run, name="power-back-on", daemon=True)
    thread.start()
    return thread
