"""Over-the-air messages: the signed release manifest, the per-device deployment ticket,
and the device-facing API (hawkBit's Direct Device Integration resource model).

Signed documents
----------------
A release manifest and a deployment ticket travel as a TUF-style envelope::

    {"signed": {...the document...},
     "signatures": [{"keyid": "<sha256 of the raw Ed25519 public key, hex>",
                     "sig": "<base64 Ed25519 signature of the canonical JSON of signed>"}]}

The canonical JSON is ``json.dumps(signed, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` in UTF-8. The manifest says what a release is (its package, the
golden input for the health check, the anti-rollback version); the ticket binds one
release to one device for one action, so a deployment meant for another device is refused.

The device-facing API
---------------------
Paths follow DDI (``/ddi/{tenant}/controller/v1/{controllerId}``...), the tenant being the
project id; devices authenticate with ``Authorization: TargetToken <credential>``. The
models below are the JSON bodies; ``_links`` keys keep DDI's names.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from tinymlaas.errors import UnsafeInputError

__all__ = [
    "ControllerBase",
    "DdiArtifact",
    "DdiChunk",
    "DdiDeployment",
    "DeploymentBase",
    "DeploymentTicket",
    "EnrollRequest",
    "Enrollment",
    "Feedback",
    "FeedbackStatus",
    "HealthSpec",
    "Href",
    "ReleaseFile",
    "ReleaseManifest",
    "Stage",
    "canonical_json",
    "key_id",
    "load_public_key",
    "public_key_pem",
    "sign_document",
    "verify_document",
]

#: The most of a manifest or ticket envelope anyone reads.
MAX_ENVELOPE_BYTES = 64 * 1024

#: What the agent reports in ``status.tinymlaas.stage`` of a feedback, in order.
Stage = Literal["offered", "downloading", "downloaded", "verified", "installed", "switched",
                "health", "committed", "rolled_back", "refused", "failed", "cancelled"]


def canonical_json(document: Any) -> bytes:
    """The bytes a signature covers."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: names the key in an envelope."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM.

    Raises:
        UnsafeInputError: not an Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as exc:
        raise UnsafeInputError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UnsafeInputError("the release signing key must be an Ed25519 key")
    return key


def sign_document(document: dict[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The envelope of ``document`` signed by ``private_key``."""
    signature = private_key.sign(canonical_json(document))
    return {"signed": document,
            "signatures": [{"keyid": key_id(private_key.public_key()),
                            "sig": base64.b64encode(signature).decode()}]}


def verify_document(envelope: Any, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The signed document of ``envelope`` when one of its signatures is ``public_key``'s.

    Raises:
        UnsafeInputError: malformed, signed by another key, or a bad signature.
    """
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signed"), dict) \
            or not isinstance(envelope.get("signatures"), list):
        raise UnsafeInputError("not a signed document (expected 'signed' and 'signatures')")
    wanted = key_id(public_key)
    sigs = [s for s in envelope["signatures"] if isinstance(s, dict) and s.get("keyid") == wanted]
    if not sigs:
        found = [str(s.get("keyid"))[:16] for s in envelope["signatures"] if isinstance(s, dict)]
        raise UnsafeInputError(f"signed by an unknown key ({', '.join(found) or 'none'}); "
                               f"this device trusts only {wanted[:16]}")
    payload = canonical_json(envelope["signed"])
    for sig in sigs:
        try:
            public_key.verify(base64.b64decode(str(sig.get("sig", "")), validate=True), payload)
        except (InvalidSignature, ValueError):
            continue
        return envelope["signed"]
    raise UnsafeInputError("bad signature: the document was changed after it was signed")


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# --------------------------------------------------------------------------- signed documents

class ReleaseFile(_Message):
    """One file of a release, as the agent downloads it (``name`` is the DDI filename)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    kind: str


class HealthSpec(_Message):
    """The health check a device runs on a trial install before it commits.

    ``golden`` is an NPZ file of the release holding ``input/<name>`` arrays and the
    ``output/<i>`` arrays the model gave for them on the server; the installed package must
    reproduce the outputs within ``atol + rtol * |expected|`` and stay under
    ``max_latency_ms`` per call (median of ``repeats`` calls).
    """

    golden: str | None = None
    atol: float = Field(default=1e-3, ge=0)
    rtol: float = Field(default=1e-3, ge=0)
    max_latency_ms: float | None = Field(default=None, gt=0)
    repeats: int = Field(default=5, ge=1, le=1000)


class ReleaseManifest(_Message):
    """What a release is; signed by the project's release key."""

    type: Literal["tinymlaas-release"] = "tinymlaas-release"
    spec_version: Literal[1] = 1
    release_id: str
    project: str
    name: str
    #: Anti-rollback: a device never installs a version lower than or equal to its own.
    version: int = Field(ge=1)
    run_id: str | None = None
    created_at: datetime
    #: Catalog device profile the release is built for; None: any device.
    device_profile: str | None = None
    package: ReleaseFile
    files: list[ReleaseFile]
    health: HealthSpec


class DeploymentTicket(_Message):
    """Binds a release (by its manifest's sha256) to one device for one action."""

    type: Literal["tinymlaas-ticket"] = "tinymlaas-ticket"
    action_id: str
    controller_id: str
    project: str
    release_id: str
    version: int = Field(ge=1)
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    issued_at: datetime


# --------------------------------------------------------------------------- DDI bodies

class Href(_Message):
    href: str


class PollingConfig(_Message):
    #: ``HH:MM:SS``, as DDI writes it.
    sleep: str


class ControllerConfig(_Message):
    polling: PollingConfig


class ControllerBase(_Message):
    """``GET /ddi/{tenant}/controller/v1/{controllerId}``: when to poll again, and a
    ``deploymentBase`` (and our ``inference``) link when there is work."""

    config: ControllerConfig
    links: dict[str, Href] = Field(default_factory=dict, alias="_links")


class DdiHashes(_Message):
    sha1: str | None = None
    md5: str | None = None
    sha256: str


class DdiArtifact(_Message):
    filename: str
    hashes: DdiHashes
    size: int
    links: dict[str, Href] = Field(default_factory=dict, alias="_links")


class DdiMetadata(_Message):
    key: str
    value: str


class DdiChunk(_Message):
    part: str
    version: str
    name: str
    artifacts: list[DdiArtifact]
    metadata: list[DdiMetadata] | None = None


class DdiDeployment(_Message):
    download: Literal["skip", "attempt", "forced"] = "forced"
    update: Literal["skip", "attempt", "forced"] = "forced"
    chunks: list[DdiChunk]


class ActionHistory(_Message):
    status: str
    messages: list[str] = Field(default_factory=list)


class DeploymentBase(_Message):
    """``GET .../deploymentBase/{actionId}``: one chunk (``part: "model"``) whose artifacts
    are ``manifest.json`` (the signed manifest), ``ticket.json`` (the signed ticket) and the
    release's files."""

    id: str
    deployment: DdiDeployment
    action_history: ActionHistory | None = Field(default=None, alias="actionHistory")


class FeedbackProgress(_Message):
    cnt: int = Field(ge=0)
    of: int | None = Field(default=None, ge=0)


class FeedbackResult(_Message):
    finished: Literal["success", "failure", "none"]
    progress: FeedbackProgress | None = None


class AgentReport(_Message):
    """Our extension of a DDI feedback status (DDI clients may leave it out)."""

    stage: Stage
    version: int | None = Field(default=None, ge=0, le=2**31 - 1)  # fits the database
    slot: str | None = None
    latency_ms: float | None = None


class FeedbackStatus(_Message):
    execution: Literal["closed", "proceeding", "canceled", "scheduled", "rejected", "resumed",
                       "downloaded", "download"]
    result: FeedbackResult
    code: int | None = None
    details: list[Annotated[str, Field(max_length=4000)]] = Field(default_factory=list,
                                                                 max_length=50)
    tinymlaas: AgentReport | None = None


class Feedback(_Message):
    """``POST .../deploymentBase/{actionId}/feedback``."""

    status: FeedbackStatus
    timestamp: int | None = None


# --------------------------------------------------------------------------- enrollment

class EnrollRequest(_Message):
    """``POST /ddi/enroll``: trade a one-time enrollment code for the device credential."""

    code: str = Field(min_length=8, max_length=200)


class Enrollment(_Message):
    tenant: str
    controller_id: str
    name: str
    token: str
    device_profile: str | None = None
    #: The project's release key (PEM) and its key id: the trust anchor the agent keeps.
    public_key: str
    key_id: str
    poll_s: int
