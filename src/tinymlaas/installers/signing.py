"""Per-project signing keys and MCUboot image signing and verification.

Keys
----
Each project has one current ECDSA P-256 key (the signature type MCUboot builds for by
default with ``CONFIG_BOOT_SIGNATURE_TYPE_ECDSA_P256``; imgtool signs and verifies it).
The key directory the engine hands a signing step (``<home>/keys/<project>``) looks like::

    <key_dir>/                 mode 0700
      signing-key.pem          mode 0600  current private key (PKCS#8 PEM, unencrypted)
      release-key.pem          mode 0600  Ed25519 key that signs over-the-air release
                                          manifests and deployment tickets
      .lock                    mode 0600  serialises creation and rotation (flock)
      retired/                 mode 0700
        <fingerprint>.pem      mode 0600  earlier private keys, kept after a rotation

A key's *fingerprint* is the SHA-256 of its public key in DER (SubjectPublicKeyInfo), in
hex. It is also exactly what MCUboot's ``KEYHASH`` TLV holds, so an image names the key that
signed it. Private keys are written to a fresh file opened with mode 0600 (never readable
by others, even briefly), fsynced and then linked or renamed into place, so a reader sees
either no key or a whole one. Only the public key (PEM) and the fingerprint ever leave the
directory.

Signing is deterministic (RFC 6979 ECDSA nonces): the same firmware, parameters and key
give byte-identical images, which keeps the step cache honest.

Rotation keeps the previous private key under ``retired/`` so images signed before the
rotation stay verifiable while devices move to a bootloader that trusts the new key
(MCUboot can hold several keys in its key table during such a transition).

These functions run in the server (rotation) and in step worker processes (signing); they
need only the file system (POSIX ``flock``), no database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.hashes import SHA256
from pydantic import BaseModel, Field

from tinymlaas.errors import InvalidInputError, NotFoundError

__all__ = [
    "KEY_TYPE",
    "SignedImage",
    "VerifiedImage",
    "ensure_key",
    "fingerprint",
    "parse_version",
    "public_key_pem",
    "release_key",
    "retired_public_keys",
    "rotate_key",
    "sign_image",
    "verify_image",
]

#: The signature type of every project key (imgtool ``keygen -t ecdsa-p256``).
KEY_TYPE = "ecdsa-p256"
PRIVATE_KEY_FILE = "signing-key.pem"
RELEASE_KEY_FILE = "release-key.pem"
RETIRED_DIR = "retired"
LOCK_FILE = ".lock"

_TLV_PROT_INFO_MAGIC = 0x6908
_TLV_SEC_CNT = 0x50
_VERSION = re.compile(r"^(\d{1,3})(?:\.(\d{1,3})(?:\.(\d{1,5})(?:\+(\d{1,10}))?)?)?$")


# --------------------------------------------------------------------------- key storage


def fingerprint(public_pem: bytes) -> str:
    """The SHA-256 (hex) of a public key's DER SubjectPublicKeyInfo: its ``KEYHASH``."""
    key = _load_public(public_pem)
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def ensure_key(key_dir: Path) -> str:
    """Create the project's signing key if it has none, and return its fingerprint.

    Safe to call from several processes at once: creation is serialised by a lock and
    published with an exclusive link, so all callers end with the same single key.

    Args:
        key_dir: The project's key directory (created with mode 0700 if absent).

    Returns:
        The current key's fingerprint (SHA-256 hex of the public key DER).
    """
    key_dir = _prepare_dir(Path(key_dir))
    current = key_dir / PRIVATE_KEY_FILE
    with _locked(key_dir):
        if not current.exists():
            _publish_new_key(key_dir, current, replace=False)
        return fingerprint(_public_pem_of(_load_private(current)))


def release_key(key_dir: Path) -> ed25519.Ed25519PrivateKey:
    """The project's Ed25519 release key (made now if it has none): it signs over-the-air
    release manifests and deployment tickets (:mod:`tinymlaas.contracts.ota`); devices keep
    its public half from their enrollment."""
    key_dir = _prepare_dir(Path(key_dir))
    path = key_dir / RELEASE_KEY_FILE
    with _locked(key_dir):
        if not path.exists():
            pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption())
            _write_secret(path, pem, replace=False)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InvalidInputError(f"{path.name} is not an Ed25519 private key")
    return key


def rotate_key(key_dir: Path) -> tuple[str, str]:
    """Make a new current key and archive the old one under ``retired/<fingerprint>.pem``.

    Images signed before the rotation still verify with the old public key (see
    :func:`retired_public_keys`); images signed afterwards carry the new key's hash.

    Args:
        key_dir: The project's key directory.

    Returns:
        ``(old fingerprint, new fingerprint)``.

    Raises:
        NotFoundError: The project has no key yet (nothing to rotate); sign once or call
            :func:`ensure_key` first.
    """
    key_dir = _prepare_dir(Path(key_dir))
    current = key_dir / PRIVATE_KEY_FILE
    with _locked(key_dir):
        if not current.exists():
            raise NotFoundError("This project has no signing key to rotate yet; one is "
                                "created the first time an image is signed.")
        old_pem = current.read_bytes()
        old_fp = fingerprint(_public_pem_of(_load_private(current)))
        retired = key_dir / RETIRED_DIR
        retired.mkdir(mode=0o700, exist_ok=True)
        os.chmod(retired, 0o700)
        _write_secret(retired / f"{old_fp}.pem", old_pem, replace=True)
        new_fp = _publish_new_key(key_dir, current, replace=True)
        return old_fp, new_fp


def public_key_pem(key_dir: Path) -> bytes:
    """The current public key (PEM, SubjectPublicKeyInfo) of a project.

    Raises:
        NotFoundError: The project has no key yet.
    """
    current = Path(key_dir) / PRIVATE_KEY_FILE
    if not current.exists():
        raise NotFoundError("This project has no signing key yet; one is created the "
                            "first time an image is signed.")
    return _public_pem_of(_load_private(current))


def retired_public_keys(key_dir: Path) -> dict[str, bytes]:
    """Public keys (PEM) of the project's retired keys, by fingerprint, sorted."""
    retired = Path(key_dir) / RETIRED_DIR
    if not retired.is_dir():
        return {}
    keys = {}
    for path in sorted(retired.glob("*.pem")):
        keys[path.stem] = _public_pem_of(_load_private(path))
    return keys


def _prepare_dir(key_dir: Path) -> Path:
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if key_dir.is_symlink() or not key_dir.is_dir():
        raise InvalidInputError(f"The key directory {key_dir} must be a real directory.")
    os.chmod(key_dir, 0o700)
    return key_dir


@contextlib.contextmanager
def _locked(key_dir: Path) -> Iterator[None]:
    fd = os.open(key_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _publish_new_key(key_dir: Path, target: Path, *, replace: bool) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write_secret(target, pem, replace=replace)
    return fingerprint(_public_pem_of(key))


def _write_secret(target: Path, data: bytes, *, replace: bool) -> None:
    """Write ``data`` to ``target`` with mode 0600 from the first byte, atomically.

    With ``replace=False`` the file is published with ``link``, which fails when the target
    exists: a concurrent creator keeps its key and this one is dropped.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)  # mode 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                pass
            except OSError:  # no hard links here: the caller's lock keeps this exclusive
                if not target.exists():
                    os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_private(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"The signing key {path.name} is unreadable or protected by "
                                "a password; restore it from a backup.") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidInputError(f"{path.name} is not an ECDSA P-256 private key; rotate the "
                                "project's key to replace it.")
    return key


def _load_public(pem: bytes) -> Any:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError("The public key is not a PEM SubjectPublicKeyInfo key; "
                                "give the signing-key.pub.pem of the project.") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidInputError("The public key must be an ECDSA P-256 key.")
    return key


def _public_pem_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


# --------------------------------------------------------------------------- signing


def parse_version(text: str) -> tuple[int, int, int, int]:
    """Parse an MCUboot version ``major.minor.revision+build`` (later parts optional).

    Raises:
        ValueError: Not of that form, or a part over its field (8, 8, 16 and 32 bits).
    """
    match = _VERSION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a version like 1.2.3 or 1.2.3+4")
    parts = tuple(int(group) if group else 0 for group in match.groups())
    limits = (255, 255, 65535, 2**32 - 1)
    for value, limit, name in zip(parts, limits, ("major", "minor", "revision", "build"),
                                  strict=True):
        if value > limit:
            raise ValueError(f"the {name} part of {text!r} is over {limit}")
    return parts  # type: ignore[return-value]


class SignedImage(BaseModel):
    """What :func:`sign_image` wrote."""

    path: Path
    hex_path: Path | None = None
    image_hash: str = Field(description="SHA-256 (hex) of header + payload + protected TLVs")
    key_fingerprint: str
    public_key_pem: bytes = Field(description="the public half of the key that signed it")
    image_bytes: int = Field(description="size of the signed binary (header to last TLV, "
                             "or the whole slot when padded)")
    payload_bytes: int


class VerifiedImage(BaseModel):
    """The facts of an image whose signature checked out."""

    version: str
    image_hash: str
    key_fingerprint: str
    header_size: int
    image_size: int
    load_address: int
    flags: int
    security_counter: int | None = None


def _imgtool_key(key: ec.EllipticCurvePrivateKey) -> Any:
    """imgtool's P-256 signer, with RFC 6979 nonces (imgtool matches key classes exactly,
    so the instance's ``raw_sign`` is replaced rather than the class subclassed)."""
    from imgtool.keys import ECDSA256P1

    signer = ECDSA256P1(key)
    signer.raw_sign = lambda payload: key.sign(
        payload, ec.ECDSA(SHA256(), deterministic_signing=True))
    return signer


def sign_image(
    firmware: Path,
    out: Path,
    key_dir: Path,
    *,
    version: str,
    header_size: int,
    slot_size: int,
    align: int = 8,
    security_counter: int | None = None,
    pad: bool = False,
    confirm: bool = False,
    hex_address: int | None = None,
) -> SignedImage:
    """Sign a raw application binary as an MCUboot image with the project's current key.

    The binary must start with its vector table; ``header_size`` bytes are prepended
    (``--pad-header``) for the image header, as the firmware was linked at slot start +
    header size.

    Args:
        firmware: The ``objcopy -O binary`` output.
        out: The signed ``.bin`` to write.
        key_dir: The project's key directory (the key is created if absent).
        version: ``major.minor.revision+build``.
        header_size: Bytes reserved for the image header (``--header-size``).
        slot_size: Size of the slot (``--slot-size``).
        align: Flash write alignment (``--align``).
        security_counter: Anti-rollback counter (``SEC_CNT`` protected TLV), or none.
        pad: Pad to the slot size and write the trailer magic (``--pad``).
        confirm: Mark the image confirmed (``--confirm``, implies ``pad``).
        hex_address: Also write ``out`` with suffix ``.hex`` at this address.

    Returns:
        The paths, the image hash and the key fingerprint.

    Raises:
        InvalidInputError: A bad version, or an image that does not fit the slot.
    """
    from imgtool import image as imgtool_image
    from imgtool.version import decode_version

    try:
        parse_version(version)
    except ValueError as exc:
        raise InvalidInputError(f"Bad image version: {exc}.") from exc
    current = Path(key_dir) / PRIVATE_KEY_FILE
    if not current.exists():  # the engine made it already; a step only reads it then
        ensure_key(key_dir)
    private = _load_private(current)
    key = _imgtool_key(private)
    pad = pad or confirm
    img = imgtool_image.Image(
        version=decode_version(version), header_size=header_size, pad_header=True, pad=pad,
        confirm=confirm, align=align, slot_size=slot_size, security_counter=security_counter)
    try:
        # imgtool prints progress on stdout, which step processes keep for their protocol.
        with contextlib.redirect_stdout(io.StringIO()):
            img.load(str(firmware))
            img.create(key, "hash", None)
            img.save(str(out))
    except Exception as exc:  # imgtool reports misfits as click usage errors
        if type(exc).__module__.startswith("click"):
            raise InvalidInputError(f"imgtool refused the image: {exc}") from exc
        raise
    hex_path = None
    if hex_address is not None:
        hex_path = out.with_suffix(".hex")
        img.save(str(hex_path), hex_addr=hex_address)
    public = _public_pem_of(private)
    return SignedImage(path=out, hex_path=hex_path, image_hash=bytes(img.image_hash).hex(),
                       key_fingerprint=fingerprint(public), public_key_pem=public,
                       image_bytes=out.stat().st_size, payload_bytes=firmware.stat().st_size)


def verify_image(image: Path, public_key_pem: bytes) -> VerifiedImage:
    """Check an MCUboot image's hash and signature against a public key, as MCUboot does.

    Args:
        image: A signed ``.bin`` (or ``.hex``) image.
        public_key_pem: The public key (PEM) that should have signed it.

    Returns:
        The image's version, hash, key fingerprint and header fields.

    Raises:
        InvalidInputError: Not an MCUboot image, a payload that does not match its hash
            (tampered or corrupt), or a signature by another key.
    """
    from imgtool import image as imgtool_image
    from imgtool import keys as imgtool_keys

    key_fp = fingerprint(public_key_pem)
    key = imgtool_keys.ECDSA256P1Public(_load_public(public_key_pem))
    try:
        result, _version, digest, _sig = imgtool_image.Image.verify(str(image), key)
    except (struct.error, ValueError, IndexError) as exc:
        raise InvalidInputError(f"{Path(image).name} is not a readable MCUboot image "
                                f"({exc}).") from exc
    ok = imgtool_image.VerifyResult.OK
    if result != ok:
        reasons = {
            "INVALID_MAGIC": "it is not an MCUboot image (bad header magic)",
            "INVALID_TLV_INFO_MAGIC": "its TLV area is missing or damaged",
            "INVALID_HASH": "its content does not match its hash (tampered or corrupt)",
            "INVALID_SIGNATURE": "its signature was not made by this key",
            "KEY_MISMATCH": "it was signed with another key type",
        }
        raise InvalidInputError(
            f"{Path(image).name} failed verification: {reasons.get(result.name, result.name)}.",
            {"result": result.name, "key_fingerprint": key_fp})
    facts = _read_header(Path(image))
    return VerifiedImage(image_hash=bytes(digest).hex(), key_fingerprint=key_fp, **facts)


def _read_header(image: Path) -> dict[str, Any]:
    data = image.read_bytes()
    if image.suffix.lower() == ".hex":
        from intelhex import IntelHex

        data = IntelHex(str(image)).tobinstr()
    _magic, load, hdr, _prot, size, flags = struct.unpack_from("<IIHHII", data, 0)
    major, minor, revision, build = struct.unpack_from("<BBHI", data, 20)
    version = f"{major}.{minor}.{revision}" + (f"+{build}" if build else "")
    counter = None
    off = hdr + size
    tlv_magic, total = struct.unpack_from("<HH", data, off)
    if tlv_magic == _TLV_PROT_INFO_MAGIC:
        pos, end = off + 4, off + total
        while pos + 4 <= end:
            kind, length = struct.unpack_from("<HH", data, pos)
            if kind == _TLV_SEC_CNT and length == 4:
                (counter,) = struct.unpack_from("<I", data, pos + 4)
            pos += 4 + length
    return {"version": version, "header_size": hdr, "image_size": size,
            "load_address": load, "flags": flags, "security_counter": counter}
