"""What a device checks before it installs anything.

1. The manifest envelope is signed by the project's release key received at enrollment
   (the trust anchor), and so is the ticket.
2. The ticket binds this release to this device: this controller id, this project, this
   action, the manifest's sha256, release id and version.
3. Anti-rollback: the version is above every version this device ever committed.
4. The manifest's device profile, when it names one, is this device's.
5. Every file is listed in the manifest with the same sha256 and size the DDI artifact
   gives, and the downloaded bytes hash to it (checked by the download itself).

Each failure raises :class:`~tinymlaas.errors.UnsafeInputError` (or
:class:`~tinymlaas.errors.InvalidInputError`) whose message is the refusal reported to the
server.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from tinymlaas.contracts.ota import (
    DdiArtifact,
    DeploymentTicket,
    ReleaseFile,
    ReleaseManifest,
    canonical_json,
    verify_document,
)
from tinymlaas.errors import InvalidInputError, UnsafeInputError

__all__ = ["VerifiedRelease", "check_artifact", "sha256_file", "verify_release"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class VerifiedRelease:
    manifest: ReleaseManifest
    ticket: DeploymentTicket
    #: The signed envelope of the manifest, as received (kept in the slot).
    manifest_bytes: bytes


def _envelope(data: bytes, what: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise UnsafeInputError(f"the {what} is not JSON") from None


def verify_release(manifest_bytes: bytes, ticket_bytes: bytes, anchor: Ed25519PublicKey, *,
                   tenant: str, controller_id: str, action_id: str,
                   device_profile: str | None, floor_version: int) -> VerifiedRelease:
    """The manifest and ticket of a deployment when this device may install it.

    Raises:
        UnsafeInputError: a signature, binding, anti-rollback or profile check failed.
    """
    envelope = _envelope(manifest_bytes, "manifest")
    signed = verify_document(envelope, anchor)
    try:
        manifest = ReleaseManifest.model_validate(signed)
    except ValidationError as exc:
        raise InvalidInputError(f"the signed manifest is malformed: {exc.errors()[0]}") from None
    ticket_doc = verify_document(_envelope(ticket_bytes, "ticket"), anchor)
    try:
        ticket = DeploymentTicket.model_validate(ticket_doc)
    except ValidationError as exc:
        raise InvalidInputError(f"the signed ticket is malformed: {exc.errors()[0]}") from None
    if ticket.controller_id != controller_id:
        raise UnsafeInputError(f"the ticket is for device {ticket.controller_id!r}, not this "
                               f"device ({controller_id!r})")
    if ticket.project != tenant or manifest.project != tenant:
        raise UnsafeInputError(f"the release belongs to project {manifest.project!r} (ticket: "
                               f"{ticket.project!r}), not this device's project {tenant!r}")
    if ticket.action_id != action_id:
        raise UnsafeInputError(f"the ticket is for action {ticket.action_id!r}, not {action_id!r}")
    # The ticket names the manifest by the sha256 of the canonical JSON of its envelope (the
    # bytes the server serves as manifest.json).
    digests = {hashlib.sha256(manifest_bytes).hexdigest(),
               hashlib.sha256(canonical_json(envelope)).hexdigest()}
    if ticket.manifest_sha256 not in digests:
        raise UnsafeInputError("the ticket names another manifest (its manifest_sha256 differs)")
    if ticket.release_id != manifest.release_id or ticket.version != manifest.version:
        raise UnsafeInputError(f"the ticket is for release {ticket.release_id} version "
                               f"{ticket.version}, the manifest is {manifest.release_id} "
                               f"version {manifest.version}")
    if manifest.version <= floor_version:
        raise UnsafeInputError(f"anti-rollback: version {manifest.version} is not above version "
                               f"{floor_version}, which this device has committed")
    if manifest.device_profile is not None and manifest.device_profile != device_profile:
        this = (f"this device is {device_profile!r}" if device_profile else
                "this device has none (enroll it with that profile)")
        raise UnsafeInputError(f"the release is built for device profile "
                               f"{manifest.device_profile!r}; {this}")
    names = [f.name for f in manifest.files]
    if manifest.package.name not in names:
        names.append(manifest.package.name)
    if manifest.health.golden is not None and manifest.health.golden not in names:
        raise InvalidInputError(f"the manifest's golden file {manifest.health.golden!r} is not "
                                "one of its files")
    return VerifiedRelease(manifest, ticket, manifest_bytes)


def check_artifact(artifact: DdiArtifact | None, release_file: ReleaseFile) -> DdiArtifact:
    """The DDI artifact of ``release_file`` when it says the same digest and size as the
    signed manifest.

    Raises:
        UnsafeInputError: missing, or a digest or size other than the manifest's.
    """
    if artifact is None:
        raise UnsafeInputError(f"the deployment has no artifact {release_file.name!r}, which "
                               "the manifest lists")
    if artifact.hashes.sha256.lower() != release_file.sha256 or \
            artifact.size != release_file.size:
        raise UnsafeInputError(f"{release_file.name}: the server offers sha256 "
                               f"{artifact.hashes.sha256[:16]}... ({artifact.size} bytes), the "
                               f"signed manifest says {release_file.sha256[:16]}... "
                               f"({release_file.size} bytes)")
    return artifact
