"""Gateway mode: over-the-air updates of MCU devices over SMP (MCUmgr), through MCUboot.

A microcontroller cannot run the agent, so a gateway (a Linux machine that can reach it)
runs the agent and hands each ``signed-image`` package meant for the MCU to
:func:`install_package`. The MCU runs an SMP server (Zephyr's MCUmgr) and boots through
MCUboot configured for swap with revert; this module drives it with ``smpclient``.

Stages (each reported through ``on_stage(stage, detail)``)::

    verify       (before anything is sent) the package is a well-formed signed image
    uploading    image upload to the secondary slot, with the sha256 of the whole file
    uploaded     the device lists the image in slot 1 with the package's image hash
    marked-test  image state write (confirm=False, hash): a test swap at the next boot
    reset        OS reset; MCUboot swaps the slots and boots the new image
    booted       the device is back; its image list says which image runs in slot 0
    confirmed    the new image runs and answered the health check: image state write
                 (confirm=True) makes it permanent
    reverted     the new image did not boot or failed the health check: the device was
                 reset without confirming it and runs the previous image again

What is verified before the upload: the zip is unpacked with the archive checks of every
upload (:func:`tinymlaas.formats.archives.safe_extract_zip`); ``manifest.json`` names an
MCUboot image; :func:`tinymlaas.installers.signing.verify_image` checks the header, the
SHA256 TLV against the header, payload and protected TLVs, and the ECDSA P-256 signature
against the package's public key; that hash and the key fingerprint (the KEYHASH TLV) must
equal the manifest's, and the fingerprint must be one of ``trusted_keys`` when the caller
gives them (the keys the device's MCUboot holds). A *confirmed* image is refused: it would
skip the test boot and could never be reverted. An image older than the one running is
refused unless ``allow_downgrade`` (MCUboot may refuse it too, with downgrade prevention).

What MCUboot's swap with revert gives (and this module relies on):

- The new image is written to the secondary slot only; the running one is untouched until
  the swap, so a failed or interrupted upload changes nothing.
- A *test* request makes MCUboot swap the slots at the next boot, sector by sector, with
  the progress recorded in flash: a power cut during the swap resumes it at the next
  boot, and the device ends with a whole image, never a mix of two.
- MCUboot checks the image's hash and signature against the keys built into it before
  swapping; an image it refuses is erased and the old one boots.
- After a test swap the new image runs unconfirmed. Unless it is confirmed, the next
  reset swaps back (revert). So an application that crashes (and is reset by its
  watchdog) or fails the health check is reverted by one more reset.

The health check is the application answering an SMP echo with the same random text
after the reboot; a firmware reports itself unhealthy by refusing the echo. The device
report after every reset is the image list (image state read) — the truth of what runs;
the result says ``unknown`` (never ``committed``) when the device did not come back in
time. Only ``udp:HOST[:PORT]`` addresses are supported (port 1337 by default).

:func:`install_package` is synchronous and runs its own event loop: call it from a thread
that does not run one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from smp.image_management import ImageState
from smpclient import SMPClient
from smpclient.exceptions import SMPClientException
from smpclient.generics import error, success
from smpclient.requests.image_management import ImageStatesRead, ImageStatesWrite
from smpclient.requests.os_management import EchoWrite, ResetWrite
from smpclient.transport.udp import SMPUDPTransport

from tinymlaas.errors import (
    ConflictError,
    InvalidInputError,
    ServiceUnavailableError,
    StepFailedError,
    UnsafeInputError,
)
from tinymlaas.formats.archives import safe_extract_zip
from tinymlaas.installers.signing import VerifiedImage, parse_version, verify_image

__all__ = ["STAGES", "GatewayResult", "VerifiedPackage", "install_package", "parse_address",
           "verify_package"]

log = logging.getLogger(__name__)

#: The stages :func:`install_package` reports, in order (the last is one of the two).
STAGES = ("uploading", "uploaded", "marked-test", "reset", "booted", "confirmed", "reverted")

DEFAULT_PORT = 1337
#: The biggest MCUboot slot the product signs for (see sign-image), and the package caps.
_MAX_IMAGE_BYTES = 64 * 1024 * 1024
_MAX_PACKAGE_BYTES = _MAX_IMAGE_BYTES + (16 << 20)
_MAX_MANIFEST_BYTES = 1 << 20
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
#: Seconds one SMP request may take (the first upload request may erase a whole slot).
_REQUEST_TIMEOUT_S = 5.0
_FIRST_UPLOAD_TIMEOUT_S = 40.0
#: While waiting for the device to come back: one poll's timeout and the pause between.
_POLL_TIMEOUT_S = 0.5
_POLL_PAUSE_S = 0.1
_HEALTH_ATTEMPTS = 3

Stage = Callable[[str, str], None]


class GatewayResult(BaseModel):
    """What :func:`install_package` found at the end, as the device reported it."""

    committed: bool = Field(description="the new image runs and is confirmed (permanent)")
    outcome: Literal["confirmed", "reverted", "unchanged", "unhealthy", "unknown"] = Field(
        description=(
            "confirmed: committed; reverted: the device runs the previous image again; "
            "unchanged: it already ran this image; unhealthy: the new image failed the "
            "health check but its application had confirmed it, so it stays; unknown: the "
            "device did not come back in time, or runs an unexpected image"))
    detail: str
    image_sha256: str = Field(description="the new image's hash (its SHA256 TLV), hex")
    version: str = Field(description="the new image's version")
    previous_hash: str | None = Field(default=None, description="the image that ran before")
    previous_version: str | None = None
    active_hash: str | None = Field(default=None, description=(
        "the image slot 0 runs at the end, as the device reported it (None if unknown)"))
    active_version: str | None = None


class VerifiedPackage(BaseModel):
    """A signed-image package whose image checked out (see :func:`verify_package`)."""

    image_name: str
    image_bytes: int
    image_sha256: str = Field(description="the MCUboot image hash (SHA256 TLV), hex")
    file_sha256: str = Field(description="sha256 of the whole .bin as uploaded")
    version: str
    key_fingerprint: str
    security_counter: int | None = None


# --------------------------------------------------------------------------- the package


def verify_package(package_zip: Path, *,
                   trusted_keys: Collection[str] | None = None) -> tuple[VerifiedPackage, bytes]:
    """Unpack and check a ``signed-image`` package; return its facts and the image bytes.

    Args:
        package_zip: The package (the zip of sign-image's output directory), or that
            directory itself.
        trusted_keys: Key fingerprints (SHA-256 of the public key DER, hex) the device's
            MCUboot trusts; when given, an image signed by any other key is refused.

    Raises:
        InvalidInputError: Not a signed-image package, or the image fails verification
            (not an MCUboot image, tampered or corrupt, signature by another key).
        UnsafeInputError: The image disagrees with its manifest, is signed by a key that
            is not trusted, or the archive is unsafe.
    """
    package_zip = Path(package_zip)
    if package_zip.is_dir():
        return _verify_directory(package_zip, trusted_keys)
    if not package_zip.is_file():
        raise InvalidInputError(f"The package {package_zip} does not exist.")
    with tempfile.TemporaryDirectory(prefix="tinymlaas-gateway-") as tmp:
        root = safe_extract_zip(package_zip, Path(tmp) / "package", max_entries=64,
                                max_total_bytes=_MAX_PACKAGE_BYTES, max_ratio=2000.0)
        return _verify_directory(root, trusted_keys)


def _verify_directory(root: Path, trusted_keys: Collection[str] | None,
                      ) -> tuple[VerifiedPackage, bytes]:
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():  # a zip of the directory itself, one level down
        subdirs = [path for path in root.iterdir() if path.is_dir()]
        if len(subdirs) == 1 and (subdirs[0] / "manifest.json").is_file():
            root, manifest_path = subdirs[0], subdirs[0] / "manifest.json"
        else:
            raise InvalidInputError("The package has no manifest.json: it is not a "
                                    "signed-image package (build one with sign-image).")
    if manifest_path.is_symlink() or manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise UnsafeInputError("The package's manifest.json is a link or too large.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"The package's manifest.json is not JSON: {exc}.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != "mcuboot":
        raise InvalidInputError("The package's manifest does not describe an MCUboot image "
                                "(format 'mcuboot'); give a signed-image package.")
    image_path = root / _plain_name(manifest.get("image"), "image")
    key_path = root / _plain_name(manifest.get("public_key", "signing-key.pub.pem"),
                                  "public_key")
    for path in (image_path, key_path):
        if path.is_symlink() or not path.is_file():
            raise InvalidInputError(f"The package lacks {path.name}, which its manifest names.")
    if image_path.stat().st_size > _MAX_IMAGE_BYTES:
        raise UnsafeInputError(f"{image_path.name} is larger than any MCUboot slot "
                               f"({_MAX_IMAGE_BYTES} bytes).")
    facts: VerifiedImage = verify_image(image_path, key_path.read_bytes())
    if manifest.get("image_hash_sha256") != facts.image_hash:
        raise UnsafeInputError(
            f"{image_path.name}'s hash TLV ({facts.image_hash[:16]}...) is not the one its "
            "manifest gives: the image was replaced; rebuild the package.",
            {"image_hash": facts.image_hash, "manifest": manifest.get("image_hash_sha256")})
    named_key = manifest.get("key_fingerprint_sha256")
    if named_key is not None and named_key != facts.key_fingerprint:
        raise UnsafeInputError(f"{image_path.name} is signed by key {facts.key_fingerprint[:16]}"
                               f"..., not by the key its manifest names.")
    if trusted_keys is not None and facts.key_fingerprint not in set(trusted_keys):
        raise UnsafeInputError(
            f"{image_path.name} is signed by key {facts.key_fingerprint[:16]}..., which the "
            "device's bootloader does not trust; sign it with the project's current key.",
            {"key_fingerprint": facts.key_fingerprint})
    if manifest.get("confirmed"):
        raise InvalidInputError("The image is signed as confirmed: it would become permanent "
                                "without a test boot and could not be reverted; sign it "
                                "without confirm.")
    named_version = manifest.get("version")
    if named_version is not None and _version_key(str(named_version)) != _version_key(
            facts.version):
        raise UnsafeInputError(f"{image_path.name} is version {facts.version}, but its "
                               f"manifest says {named_version}.")
    data = image_path.read_bytes()
    package = VerifiedPackage(
        image_name=image_path.name, image_bytes=len(data), image_sha256=facts.image_hash,
        file_sha256=hashlib.sha256(data).hexdigest(), version=facts.version,
        key_fingerprint=facts.key_fingerprint, security_counter=facts.security_counter)
    return package, data


def _plain_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise UnsafeInputError(f"The manifest's {field} must be a plain file name in the "
                               f"package, not {value!r}.")
    return value


def _version_key(text: str) -> tuple[int, int, int, int] | None:
    """``1.2.3``, ``1.2.3+4`` (imgtool) or ``1.2.3.4`` (MCUmgr's image list) as a tuple."""
    try:
        return parse_version(re.sub(r"^(\d+\.\d+\.\d+)\.(\d+)$", r"\1+\2", text.strip()))
    except ValueError:
        return None


# --------------------------------------------------------------------------- the address


def parse_address(address: str) -> tuple[str, int]:
    """``udp:HOST[:PORT]`` (``udp:[::1]:1337`` for IPv6) as ``(host, port)``.

    Raises:
        InvalidInputError: Another transport, or a malformed address.
    """
    scheme, _, rest = address.partition(":")
    if scheme != "udp" or not rest:
        raise InvalidInputError(f"The device address {address!r} is not supported: give "
                                "udp:HOST:PORT (the device's SMP server over UDP).")
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?|([^:\[\]]+)(?::(\d{1,5}))?",
                         rest)
    if not match:
        raise InvalidInputError(f"The device address {address!r} is malformed: give "
                                "udp:HOST:PORT.")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4) or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise InvalidInputError(f"The port in {address!r} must be 1 to 65535.")
    return host, port


class _UDPTransport(SMPUDPTransport):
    """smpclient's UDP transport, on a given port (``SMPClient.connect`` passes none)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._port = port

    async def connect(self, address: str, timeout_s: float, port: int | None = None) -> None:
        await super().connect(address, timeout_s, self._port if port is None else port)


# --------------------------------------------------------------------------- the update


def install_package(package_zip: Path, address: str, *, on_stage: Stage,
                    timeout_s: float = 120.0, trusted_keys: Collection[str] | None = None,
                    allow_downgrade: bool = False) -> GatewayResult:
    """Update an MCU over SMP with a signed-image package; test-boot it, then confirm it or
    let MCUboot revert it.

    Args:
        package_zip: The ``signed-image`` package (zip, or its unpacked directory).
        address: The device's SMP server, ``udp:HOST[:PORT]``.
        on_stage: Called with ``(stage, detail)`` at each stage (see :data:`STAGES`).
        timeout_s: The longest wait for the device to come back after each reset (the
            swap of a large slot takes a while); also caps each SMP request's timeout.
        trusted_keys: Key fingerprints the device's MCUboot trusts (see
            :func:`verify_package`).
        allow_downgrade: Install an image older than the running one.

    Returns:
        What the device reports at the end: committed, reverted or unknown.

    Raises:
        InvalidInputError: A bad address, or the package fails verification (nothing is
            sent to the device then).
        UnsafeInputError: The image disagrees with its manifest or its key is not trusted.
        ConflictError: The image is older than the running one.
        ServiceUnavailableError: The device does not answer (nothing was sent).
        StepFailedError: The device refused the upload or the test request, or stopped
            answering before the reset (it still runs the previous image).
    """
    if timeout_s <= 0:
        raise InvalidInputError("timeout_s must be positive.")
    host, port = parse_address(address)
    package, image = verify_package(package_zip, trusted_keys=trusted_keys)
    log.info("verified %s %s (image hash %s, key %s)", package.image_name, package.version,
             package.image_sha256[:16], package.key_fingerprint[:16])
    session = _Session(host, port, address, timeout_s, on_stage)
    return asyncio.run(session.run(package, image, allow_downgrade=allow_downgrade))


def _slot(states: list[ImageState], slot: int) -> ImageState | None:
    for state in states:
        if state.slot == slot and (state.image or 0) == 0:
            return state
    return None


def _hash_of(state: ImageState | None) -> str | None:
    return bytes(state.hash).hex() if state is not None and state.hash else None


def _fingerprint(states: list[ImageState]) -> tuple[Any, ...]:
    return tuple(sorted((s.image or 0, s.slot, _hash_of(s), bool(s.active), bool(s.confirmed),
                         bool(s.pending), bool(s.permanent)) for s in states))


class _DeviceError(Exception):
    """The device answered a request with an SMP error."""


def _smp_error(response: Any) -> str:
    """An SMP error answer in words: its code's name (version 2 ``err`` or version 1 ``rc``)
    and reason."""
    err = getattr(response, "err", None)
    code = err.rc if err is not None else getattr(response, "rc", None)
    reason = getattr(response, "rsn", None)
    return str(getattr(code, "name", code)) + (f" ({reason})" if reason else "")


def _why(exc: BaseException) -> str:
    """One short phrase for a failed request (smpclient's timeouts quote the whole frame)."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    answer = exc.args[0] if exc.args else None
    if hasattr(answer, "err") or hasattr(answer, "rc"):  # an upload refused with an error
        return f"refused: {_smp_error(answer)}"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class _Session:
    def __init__(self, host: str, port: int, address: str, timeout_s: float,
                 on_stage: Stage) -> None:
        self.host, self.port, self.address = host, port, address
        self.timeout_s = timeout_s
        self.request_timeout_s = min(_REQUEST_TIMEOUT_S, timeout_s)
        self.on_stage = on_stage

    # ----------------------------------------------------------------- SMP plumbing

    async def _client(self, timeout_s: float) -> SMPClient:
        client = SMPClient(_UDPTransport(self.port), self.host, timeout_s=timeout_s)
        await client.connect()
        return client

    async def _call(self, client: SMPClient, request: Any, timeout_s: float | None = None,
                    ) -> Any:
        response = await client.request(request, timeout_s=timeout_s)
        if error(response):
            raise _DeviceError(f"{type(request).__name__} refused: {_smp_error(response)}")
        if not success(response):  # pragma: no cover - smpclient returns one of the two
            raise _DeviceError(f"unexpected answer to {type(request).__name__}: {response}")
        return response

    async def _states_once(self, timeout_s: float) -> list[ImageState] | None:
        """One image-list read on a fresh socket (no stale answers); None if no answer."""
        client = None
        try:
            client = await self._client(timeout_s)
            response = await self._call(client, ImageStatesRead(), timeout_s)
            return list(response.images)
        except (TimeoutError, OSError, SMPClientException, _DeviceError, ValueError) as exc:
            log.debug("no image list from %s: %s", self.address, _why(exc))
            return None
        finally:
            if client is not None:
                await _quietly_disconnect(client)

    async def _wait_back(self, before: list[ImageState]) -> list[ImageState] | None:
        """After a reset: the image list once the device answers again, changed (or after
        it was seen down); None when it did not within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        went_down = False
        poll = min(_POLL_TIMEOUT_S, self.request_timeout_s)
        await asyncio.sleep(_POLL_PAUSE_S)
        while loop.time() < deadline:
            states = await self._states_once(poll)
            if states is None:
                went_down = True
            elif went_down or _fingerprint(states) != _fingerprint(before):
                return states
            await asyncio.sleep(_POLL_PAUSE_S)
        return None

    async def _reset(self, client: SMPClient) -> None:
        try:
            await self._call(client, ResetWrite(), self.request_timeout_s)
        except TimeoutError:  # a device may reset before its answer leaves
            log.info("no answer to the reset request; waiting for the device anyway")
        finally:
            await _quietly_disconnect(client)

    async def _healthy(self) -> tuple[bool, str]:
        """The application's answer to an echo of a random text (retried while silent)."""
        text = f"tinymlaas-health {secrets.token_hex(8)}"
        why = "it did not answer"
        for _attempt in range(_HEALTH_ATTEMPTS):
            client = None
            try:
                client = await self._client(self.request_timeout_s)
                response = await self._call(client, EchoWrite(d=text), self.request_timeout_s)
                if response.r == text:
                    return True, "it answered the health check"
                return False, f"it answered the health check with {response.r!r}"
            except _DeviceError as exc:
                return False, f"it refused the health check ({_why(exc)})"
            except (TimeoutError, OSError, SMPClientException, ValueError) as exc:
                why = f"it did not answer the health check ({_why(exc)})"
            finally:
                if client is not None:
                    await _quietly_disconnect(client)
            await asyncio.sleep(_POLL_PAUSE_S)
        return False, why

    # ----------------------------------------------------------------- the stages

    async def run(self, package: VerifiedPackage, image: bytes, *,
                  allow_downgrade: bool) -> GatewayResult:
        new_hash = package.image_sha256
        client = SMPClient(_UDPTransport(self.port), self.host,
                           timeout_s=self.request_timeout_s)
        try:
            await client.connect()
            before = list((await self._call(client, ImageStatesRead())).images)
        except (TimeoutError, OSError, SMPClientException, _DeviceError) as exc:
            await _quietly_disconnect(client)
            raise ServiceUnavailableError(
                f"The device at {self.address} does not answer SMP requests ({_why(exc)}); "
                "check that it is on and runs an SMP server over UDP.") from exc
        try:
            active = _slot(before, 0)
            previous_hash = _hash_of(active)
            previous_version = active.version if active is not None else None
            result: dict[str, Any] = {"image_sha256": new_hash, "version": package.version,
                      "previous_hash": previous_hash, "previous_version": previous_version}
            if previous_hash == new_hash and active is not None:
                confirmed = bool(active.confirmed)
                await _quietly_disconnect(client)
                # Already there: committed only when confirmed and answering its health check
                healthy, why = await self._healthy() if confirmed else (False, "")
                return GatewayResult(
                    committed=confirmed and healthy,
                    outcome="unchanged" if healthy or not confirmed else "unhealthy",
                    active_hash=new_hash, active_version=active.version, **result,
                    detail=f"the device already runs {package.version}"
                    + (f"; {why}" if confirmed else " (not confirmed yet)")
                    + "; nothing was sent")
            self._check_downgrade(package, previous_version, allow_downgrade)
            await self._upload(client, package, image)
            await self._mark_test(client, package)
            marked = list((await self._call(client, ImageStatesRead())).images)
        except (TimeoutError, OSError, SMPClientException, _DeviceError) as exc:
            await _quietly_disconnect(client)
            raise StepFailedError(
                f"The device at {self.address} did not take the image ({_why(exc)}); it still "
                "runs the previous image.") from exc
        except BaseException:
            await _quietly_disconnect(client)
            raise
        await self._reset(client)
        self.on_stage("reset", "the device restarts; MCUboot swaps the slots to test "
                      f"{package.version}")
        after = await self._wait_back(marked)
        if after is None:
            return self._unknown(result, "the device did not come back within "
                                 f"{self.timeout_s:g} s after the reset")
        running = _slot(after, 0)
        if _hash_of(running) != new_hash:
            self.on_stage("booted", "the device booted the previous image, not "
                          f"{package.version}: MCUboot refused it, or it did not stay up "
                          "and was reverted")
            return self._settled(after, result, reason="the new image did not boot")
        self_confirmed = bool(running and running.confirmed)
        self.on_stage("booted", f"the device runs {package.version}" + (
            " (its application confirmed it at boot)" if self_confirmed
            else " on test (not confirmed)"))
        healthy, why = await self._healthy()
        if not healthy and self_confirmed:  # MCUboot will not revert a confirmed image
            detail = (f"{package.version} {why.removeprefix('it ')}, but its application "
                      "confirmed it at boot, so MCUboot cannot revert it; install the "
                      "previous release to go back (and let the gateway confirm images)")
            log.warning("%s: %s", self.address, detail)
            return GatewayResult(committed=False, outcome="unhealthy", detail=detail,
                                 active_hash=new_hash, active_version=running.version
                                 if running else None, **result)
        if healthy:
            confirmed_states = await self._confirm(package)
            if confirmed_states is not None:
                self.on_stage("confirmed", f"{package.version} {why} and is confirmed")
                final = _slot(confirmed_states, 0)
                return GatewayResult(committed=True, outcome="confirmed", active_hash=new_hash,
                                     active_version=final.version if final else None,
                                     detail=f"{package.version} is confirmed: {why}",
                                     **result)
            why = "the device refused to confirm it"
        # Not confirmed: one more reset makes MCUboot swap the previous image back.
        try:
            client = await self._client(self.request_timeout_s)
        except (TimeoutError, OSError, SMPClientException) as exc:
            return self._unknown(result, f"{why}, and the device could not be reset "
                                 f"({_why(exc)}); "
                                 "it reverts at its next reset")
        await self._reset(client)
        reverted = await self._wait_back(after)
        if reverted is None:
            return self._unknown(result, f"{why}; the device did not come back within "
                                 f"{self.timeout_s:g} s after the reset that reverts it")
        return self._settled(reverted, result, reason=why)

    def _check_downgrade(self, package: VerifiedPackage, previous_version: str | None,
                         allow_downgrade: bool) -> None:
        if allow_downgrade or previous_version is None:
            return
        new, old = _version_key(package.version), _version_key(previous_version)
        if new is not None and old is not None and new < old:
            raise ConflictError(
                f"The device runs {previous_version}, newer than {package.version}; an "
                "update never installs an older image (allow the downgrade explicitly).",
                {"running": previous_version, "image": package.version})

    async def _upload(self, client: SMPClient, package: VerifiedPackage, image: bytes) -> None:
        total = len(image)
        self.on_stage("uploading", f"0 of {total} bytes to the secondary slot")
        reported = 0
        async for offset in client.upload(
                image, slot=0, first_timeout_s=min(_FIRST_UPLOAD_TIMEOUT_S, self.timeout_s),
                subsequent_timeout_s=self.request_timeout_s, use_sha=True):
            if offset >= total or offset - reported >= total / 4:
                reported = offset
                self.on_stage("uploading", f"{offset} of {total} bytes")
        states = list((await self._call(client, ImageStatesRead())).images)
        secondary = _slot(states, 1)
        if _hash_of(secondary) != package.image_sha256:
            raise _DeviceError(f"after the upload slot 1 holds image {_hash_of(secondary)}, "
                               f"not {package.image_sha256}")
        self.on_stage("uploaded", f"slot 1 holds {package.version} (image hash "
                      f"{package.image_sha256[:16]}...)")

    async def _mark_test(self, client: SMPClient, package: VerifiedPackage) -> None:
        response = await self._call(client, ImageStatesWrite(
            hash=bytes.fromhex(package.image_sha256), confirm=False))
        secondary = _slot(list(response.images), 1)
        if _hash_of(secondary) != package.image_sha256 or not secondary or not secondary.pending:
            raise _DeviceError("the device did not mark the new image pending for a test")
        self.on_stage("marked-test", f"{package.version} is pending: MCUboot test-boots it "
                      "at the next reset and reverts it unless it is confirmed")

    async def _confirm(self, package: VerifiedPackage) -> list[ImageState] | None:
        client = None
        try:
            client = await self._client(self.request_timeout_s)
            response = await self._call(client, ImageStatesWrite(
                hash=bytes.fromhex(package.image_sha256), confirm=True))
            states = list(response.images)
        except (TimeoutError, OSError, SMPClientException, _DeviceError) as exc:
            log.warning("confirming %s failed: %s", package.version, _why(exc))
            return None
        finally:
            if client is not None:
                await _quietly_disconnect(client)
        running = _slot(states, 0)
        if _hash_of(running) != package.image_sha256 or not running or not running.confirmed:
            return None
        return states

    def _settled(self, states: list[ImageState], result: dict[str, Any], *,
                 reason: str) -> GatewayResult:
        running = _slot(states, 0)
        active_hash = _hash_of(running)
        active: dict[str, Any] = {"active_hash": active_hash,
                  "active_version": running.version if running else None}
        if active_hash is not None and active_hash == result["previous_hash"]:
            detail = f"{reason}; the device runs {running.version if running else '?'} again"
            self.on_stage("reverted", detail)
            return GatewayResult(committed=False, outcome="reverted", detail=detail,
                                 **active, **result)
        if active_hash is not None and active_hash == result["image_sha256"]:
            detail = (f"{reason}, but the device still runs {result['version']}: it was "
                      "confirmed meanwhile, so MCUboot did not revert it")
        else:
            detail = (f"{reason}, and the device runs image {active_hash}, which is neither "
                      "the new one nor the previous one")
        return GatewayResult(committed=False, outcome="unknown", detail=detail, **active,
                             **result)

    def _unknown(self, result: dict[str, Any], detail: str) -> GatewayResult:
        log.warning("%s: %s", self.address, detail)
        return GatewayResult(committed=False, outcome="unknown", detail=detail, **result)


async def _quietly_disconnect(client: SMPClient) -> None:
    try:
        await client.disconnect()
    except (OSError, SMPClientException, RuntimeError, AttributeError) as exc:
        log.debug("disconnect: %s", exc)

