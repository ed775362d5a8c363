"""What the agent checks before installing: signatures with the enrollment's key, the
ticket's binding to this device, anti-rollback, the device profile and the digests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_support import DEVICE, TENANT, make_release, sha256
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinymlaas.agent.verify import check_artifact, verify_release
from tinymlaas.contracts.ota import DdiArtifact, sign_document
from tinymlaas.errors import UnsafeInputError


def _verify(release, key, **overrides):
    args = {"tenant": TENANT, "controller_id": DEVICE, "action_id": "act-1",
            "device_profile": None, "floor_version": 0} | overrides
    return verify_release(release.manifest, release.ticket, key.public_key(), **args)


def test_agent_accepts_a_release_signed_by_its_anchor_and_bound_to_it(
        release_key: Ed25519PrivateKey, package: tuple[Path, Path]) -> None:
    release = make_release(release_key, *package, version=3, device_profile="rpi4")
    verified = _verify(release, release_key, floor_version=2, device_profile="rpi4")
    assert verified.manifest.version == 3
    assert verified.manifest.package.sha256 == sha256(package[0])
    assert verified.ticket.controller_id == DEVICE


@pytest.mark.parametrize(("case", "message"), [
    ("wrong-key", "unknown key"),
    ("ticket-wrong-key", "unknown key"),
    ("other-device", "for device 'dev-2'"),
    ("other-action", "for action"),
    ("other-project", "belongs to project"),
    ("replay-equal", "anti-rollback"),
    ("replay-older", "anti-rollback"),
    ("profile", "device profile"),
    ("tampered-manifest", "bad signature"),
    ("ticket-other-manifest", "another manifest"),
])
def test_agent_refuses_what_does_not_verify(release_key: Ed25519PrivateKey,
                                            package: tuple[Path, Path], case: str,
                                            message: str) -> None:
    other = Ed25519PrivateKey.generate()
    key, overrides = release_key, {}
    release = make_release(release_key, *package, version=5, device_profile="rpi4")
    overrides["device_profile"] = "rpi4"
    if case == "wrong-key":
        release = make_release(other, *package, version=5)
    elif case == "ticket-wrong-key":
        release = make_release(release_key, *package, version=5, ticket_key=other,
                               device_profile="rpi4")
    elif case == "other-device":
        release = make_release(release_key, *package, version=5, controller_id="dev-2",
                               device_profile="rpi4")
    elif case == "other-action":
        overrides["action_id"] = "act-9"
    elif case == "other-project":
        overrides["tenant"] = "proj-2"
    elif case == "replay-equal":
        overrides["floor_version"] = 5
    elif case == "replay-older":
        overrides["floor_version"] = 7
    elif case == "profile":
        overrides["device_profile"] = "jetson"
    elif case == "tampered-manifest":
        envelope = json.loads(release.manifest)
        envelope["signed"]["version"] = 6
        release.manifest = json.dumps(envelope).encode()
    elif case == "ticket-other-manifest":
        other_release = make_release(release_key, *package, version=5, device_profile="rpi4")
        envelope = json.loads(other_release.ticket)
        envelope["signed"]["manifest_sha256"] = "0" * 64
        release.ticket = json.dumps(sign_document(envelope["signed"], release_key)).encode()
    with pytest.raises(UnsafeInputError, match=message):
        _verify(release, key, **overrides)


def test_agent_checks_the_servers_digest_against_the_signed_manifest(
        release_key: Ed25519PrivateKey, package: tuple[Path, Path]) -> None:
    release = make_release(release_key, *package, version=1)
    package_file = release.document.package

    def artifact(digest: str, size: int) -> DdiArtifact:
        return DdiArtifact.model_validate({"filename": package_file.name,
                                           "hashes": {"sha256": digest}, "size": size})

    assert check_artifact(artifact(package_file.sha256, package_file.size), package_file)
    with pytest.raises(UnsafeInputError, match="signed manifest says"):
        check_artifact(artifact("1" * 64, package_file.size), package_file)
    with pytest.raises(UnsafeInputError, match="signed manifest says"):
        check_artifact(artifact(package_file.sha256, package_file.size + 1), package_file)
    with pytest.raises(UnsafeInputError, match="has no artifact"):
        check_artifact(None, package_file)
