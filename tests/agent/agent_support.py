"""Releases for the agent's tests, made with the real installers and real keys: a wheel
built by package-python's builder from a small linear ONNX model, its golden NPZ computed
with ONNX Runtime, and the signed manifest and ticket."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from helpers import linear_onnx
from tinymlaas.agent.store import AgentConfig, Layout, save_config
from tinymlaas.contracts.ota import (
    DeploymentTicket,
    HealthSpec,
    ReleaseFile,
    ReleaseManifest,
    key_id,
    public_key_pem,
    sign_document,
)
from tinymlaas.installers.wheel import build_wheel

TENANT = "proj-1"
DEVICE = "dev-1"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Release:
    manifest: bytes
    ticket: bytes
    files: dict[str, Path]
    document: ReleaseManifest


def build_package(folder: Path, *, version: str = "1.0.0", seed: int = 0,
                  features: int = 256, classes: int = 64) -> tuple[Path, Path]:
    """A wheel (large enough for several download chunks) and its golden NPZ."""
    folder.mkdir(parents=True, exist_ok=True)
    model = linear_onnx(folder / f"linear{seed}.onnx", features=features, classes=classes,
                        seed=seed)
    wheel = build_wheel(model, folder, name="linear-model", version=version).path
    x = np.random.default_rng(seed).normal(size=(4, features)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    golden = folder / "golden.npz"
    np.savez(golden, **{"input/x": x, "output/0": y})
    return wheel, golden


def make_release(key: Ed25519PrivateKey, wheel: Path, golden: Path | None, *, version: int,
                 action_id: str = "act-1", controller_id: str = DEVICE,
                 tenant: str = TENANT, device_profile: str | None = None,
                 health: HealthSpec | None = None, ticket_key: Ed25519PrivateKey | None = None,
                 kind: str = "python-wheel") -> Release:
    package = ReleaseFile(name=wheel.name, sha256=sha256(wheel), size=wheel.stat().st_size,
                          kind=kind)
    files = {wheel.name: wheel}
    listed = [package]
    if golden is not None:
        files[golden.name] = golden
        listed.append(ReleaseFile(name=golden.name, sha256=sha256(golden),
                                  size=golden.stat().st_size, kind="dataset-npz"))
    spec = health or HealthSpec(golden=golden.name if golden else None)
    manifest = ReleaseManifest(release_id=f"rel-{version}", project=tenant, name="linear",
                               version=version, created_at=datetime.now(UTC),
                               device_profile=device_profile, package=package, files=listed,
                               health=spec)
    manifest_bytes = json.dumps(sign_document(manifest.model_dump(mode="json"), key)).encode()
    ticket = DeploymentTicket(action_id=action_id, controller_id=controller_id, project=tenant,
                              release_id=manifest.release_id, version=version,
                              manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
                              issued_at=datetime.now(UTC))
    ticket_bytes = json.dumps(sign_document(ticket.model_dump(mode="json"),
                                            ticket_key or key)).encode()
    return Release(manifest_bytes, ticket_bytes, files, manifest)


def enrolled_root(root: Path, key: Ed25519PrivateKey, server: str,
                  device_profile: str | None = None) -> Layout:
    """An agent directory enrolled with ``server`` (as enrollment would leave it)."""
    layout = Layout(root)
    layout.create()
    public = key.public_key()
    save_config(layout, AgentConfig(server=server, tenant=TENANT, controller_id=DEVICE,
                                    name="device one", token="device-token",
                                    device_profile=device_profile,
                                    public_key=public_key_pem(public), key_id=key_id(public),
                                    poll_s=1))
    return layout
