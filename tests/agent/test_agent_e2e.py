"""``tinymlaas agent`` against the real Studio: enrollment, an update in each slot, and the
refusals (a tampered file, a manifest signed with another key, a replayed older release),
each reported to the server and leaving the device on its committed release; inference jobs
run on the committed release."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from agent_e2e import Studio, agent, current_release, enroll, summary
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinymlaas.agent.store import Layout, load_state

STAGES = ["downloading", "downloaded", "verified", "installed", "switched", "health",
          "committed"]


def _stages(studio: Studio, device: str, action: str) -> list[str]:
    history = studio.client.fleet_device(device).history
    return [e.stage for e in sorted(history, key=lambda e: e.at) if e.action_id == action]


def _action(studio: Studio, rollout_id: str, device: str):
    actions = [a for a in studio.client.rollout(rollout_id).actions if a.device_id == device]
    assert len(actions) == 1
    return actions[0]


def test_agent_enrolls_installs_and_updates_in_the_other_slot(studio: Studio,
                                                              tmp_path: Path) -> None:
    device, code = enroll(studio, "kiosk-1", "e2e-basic")
    first = studio.client.create_release(studio.run_id)
    rollout = studio.client.deploy("e2e-basic", release=first.id)
    root = tmp_path / "agent"

    done = agent(root, server=studio.url, code=code, via_main=True)
    assert done.returncode == 0, done.stderr
    result = summary(done)
    assert (result["outcome"], result["version"], result["slot"]) == \
        ("committed", first.version, "a")
    assert current_release(root) == (first.version, "a")
    config = json.loads((root / "agent.json").read_text())
    assert config["controller_id"] == device and config["server"] == studio.url
    assert (root / "agent.json").stat().st_mode & 0o777 == 0o600
    action = _action(studio, rollout.id, device)
    assert action.state.value == "succeeded"
    assert _stages(studio, device, action.id) == STAGES
    shown = studio.client.fleet_device(device)
    assert (shown.version, shown.release_id, shown.health) == (first.version, first.id, "ok")
    assert not any((root / "downloads").iterdir())  # cleaned after the outcome

    # the next release goes to slot b; later runs need neither --server nor --token
    second = studio.client.create_release(studio.run_id)
    studio.client.deploy("e2e-basic", release=second.id)
    done = agent(root)
    assert done.returncode == 0, done.stderr
    assert summary(done)["outcome"] == "committed"
    assert current_release(root) == (second.version, "b")
    assert studio.client.fleet_device(device).version == second.version
    assert load_state(Layout(root)).floor_version == second.version

    # nothing more to do; the used code cannot enroll another agent
    assert summary(agent(root))["outcome"] == "idle"
    again = agent(tmp_path / "other", server=studio.url, code=code)
    assert again.returncode == 5 and "enrollment" in again.stderr

    # a revoked device stops with the exit code of a refused credential
    studio.client.revoke_device(device)
    revoked = agent(root)
    assert revoked.returncode == 5 and "revoked device credential" in revoked.stderr
    assert current_release(root) == (second.version, "b")


def test_agent_refuses_tampered_foreign_and_replayed_releases(studio: Studio,
                                                              tmp_path: Path) -> None:
    device, code = enroll(studio, "kiosk-2", "e2e-refusals")
    root = tmp_path / "agent"
    older = studio.client.create_release(studio.run_id)
    newer = studio.client.create_release(studio.run_id)
    studio.client.deploy("e2e-refusals", release=newer.id)
    assert summary(agent(root, server=studio.url, code=code))["outcome"] == "committed"
    assert current_release(root) == (newer.version, "a")

    def refused(rollout_id: str, reason: str) -> None:
        done = agent(root)
        assert done.returncode == 0, done.stderr
        result = summary(done)
        assert result["outcome"] == "refused" and reason in result["details"][0], result
        action = _action(studio, rollout_id, device)
        assert (action.state.value, action.stage) == ("failed", "refused")
        assert reason in action.message
        assert current_release(root) == (newer.version, "a")  # nothing installed
        shown = studio.client.fleet_device(device)
        assert (shown.version, shown.release_id) == (newer.version, newer.id)

    # a replayed older release: anti-rollback
    rollout = studio.client.deploy("e2e-refusals", release=older.id)
    refused(rollout.id, "anti-rollback")

    # the package's bytes changed on the server's disk after the release was signed
    tampered = studio.client.create_release(studio.run_id)
    blob = studio.blob(tampered.package_sha)
    original = blob.read_bytes()
    blob.chmod(0o644)
    blob.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
    try:
        rollout = studio.client.deploy("e2e-refusals", release=tampered.id)
        refused(rollout.id, "do not hash as the signed manifest says")
    finally:
        blob.write_bytes(original)

    # a manifest signed with a key the device does not trust
    key_file = studio.release_key_file()
    good_key = key_file.read_bytes()
    key_file.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    try:
        foreign = studio.client.create_release(studio.run_id)
    finally:
        key_file.write_bytes(good_key)
    rollout = studio.client.deploy("e2e-refusals", release=foreign.id)
    refused(rollout.id, "signed by an unknown key")


def test_agent_runs_inference_jobs_on_its_committed_release(studio: Studio,
                                                            tmp_path: Path) -> None:
    device, code = enroll(studio, "kiosk-3", "e2e-inference")
    root = tmp_path / "agent"
    release = studio.client.create_release(studio.run_id)
    studio.client.deploy("e2e-inference", release=release.id)
    assert summary(agent(root, server=studio.url, code=code))["outcome"] == "committed"

    # labels the model's own answers: every output computed on the device scores 1.0
    x = np.random.default_rng(7).normal(size=(60, 256)).astype(np.float32)
    logits = ort.InferenceSession(str(studio.model), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    data = tmp_path / "probe.npz"
    np.savez(data, X=x, y=np.argmax(logits, axis=1).astype(np.int64))
    dataset = studio.client.upload_dataset(data, name="probe", task="classification")
    job = studio.client.request_inference(device, dataset.id, limit=10)

    done = agent(root)
    assert done.returncode == 0, done.stderr
    result = summary(done)
    assert result["outcome"] == "idle" and result["inference"] == {"job": job.id, "samples": 10}
    finished = studio.client.inference_job(job.id)
    assert finished.state == "done" and len(finished.latency_ms) == 10
    assert all(v > 0 for v in finished.latency_ms)
    assert finished.metrics["accuracy"] == 1.0
    assert not list((root / "downloads").iterdir())
