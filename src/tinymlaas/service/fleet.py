"""Over-the-air deployment: enroll devices, make signed releases from runs, roll them out
in waves, and serve the devices' side (hawkBit DDI: poll, deployment, feedback, download).

:class:`Fleet` holds the use cases on one database; callers have already checked that the
user may see (and, for changes, edit) the project. :class:`FleetView` is one user's view,
built on their :class:`~tinymlaas.service.workspace.Workspace`: what is outside their
projects is "not found". Devices authenticate with their own credential (never a user
token) and reach only their own actions, releases and inference jobs.

The model of a rollout lives in :mod:`tinymlaas.domain.fleet`; the signed documents and the
device-facing messages in :mod:`tinymlaas.contracts.ota`; ``docs/ota.md`` tells the story.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import re
import secrets
import tempfile
import zipfile
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinymlaas.contracts.ota import (
    AgentReport,
    DeploymentTicket,
    Enrollment,
    Feedback,
    HealthSpec,
    ReleaseFile,
    ReleaseManifest,
    canonical_json,
    key_id,
    public_key_pem,
    sign_document,
)
from tinymlaas.domain import Artifact, ArtifactKind, Run, RunStatus
from tinymlaas.domain.entities import NAME_PATTERN
from tinymlaas.domain.fleet import (
    ActionState,
    DeviceAction,
    DeviceEvent,
    FleetDevice,
    InferenceJob,
    Release,
    Rollout,
    RolloutState,
)
from tinymlaas.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
)
from tinymlaas.service.services import Services
from tinymlaas.store.fleet import FleetStore
from tinymlaas.store.metadata import new_id
from tinymlaas.store.paging import Key, Page, page_list

__all__ = ["Fleet", "FleetView"]

#: How long an enrollment code stays valid.
CODE_TTL = timedelta(hours=24)
CODE_PREFIX = "tmle_"
DEVICE_TOKEN_PREFIX = "tmld_"
#: How often devices are told to poll.
POLL_S = 30
#: The golden input of a release: this many samples of the run's test split (or examples).
GOLDEN_SAMPLES = 4
#: Bounds on what a device sends back from an inference job.
MAX_RESULT_BYTES = 64 * 1024**2
MAX_INFERENCE_SAMPLES = 1000
GOLDEN_FILE = "golden.npz"
_NAME = re.compile(NAME_PATTERN)
#: Larger than any version or microsecond timestamp: newest-first keys count down from it.
_NEWEST = 10**19
_OPEN = (ActionState.offered, ActionState.running)
_FAILED = (ActionState.failed, ActionState.rolled_back)
#: File names a release's package may not take (the DDI listing serves these itself).
_RESERVED = frozenset({"manifest.json", "ticket.json", GOLDEN_FILE})


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _check_name(what: str, value: str) -> str:
    if not _NAME.match(value):
        raise InvalidInputError(f"{what} {value!r} must match {NAME_PATTERN}")
    return value


def check_waves(waves: list[int] | None) -> list[int]:
    """Cumulative percentages, rising, ending at 100 (default: one wave)."""
    waves = list(waves or [100])
    if not 1 <= len(waves) <= 10 or any(not 1 <= w <= 100 for w in waves) or \
            any(b <= a for a, b in itertools.pairwise(waves)) or waves[-1] != 100:
        raise InvalidInputError("waves are 1 to 10 rising percentages of the group ending at "
                                f"100, e.g. 10,100; got {waves}")
    return waves


def read_npz(data: bytes, what: str) -> dict[str, np.ndarray]:
    """The arrays of an NPZ sent by a device or a user (hostile: no pickles, and at most
    ``MAX_RESULT_BYTES`` unpacked).

    Raises:
        InvalidInputError: not an NPZ (``what`` says what was expected).
        PayloadTooLargeError: it unpacks to more than the limit.
    """
    if len(data) > MAX_RESULT_BYTES:
        raise PayloadTooLargeError("the file is larger than 64 MiB")
    try:  # a compressed NPZ can unpack to far more than was sent (zipfile reads no
        # entry past its declared size, so the declared sizes bound the memory)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError):
        raise InvalidInputError(what) from None
    if unpacked > MAX_RESULT_BYTES:
        raise PayloadTooLargeError("the file unpacks to more than 64 MiB")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: np.asarray(npz[name]) for name in npz.files}
    except Exception:
        raise InvalidInputError(what) from None


class Fleet:
    """The fleet's use cases on the services' database and artifact store."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = FleetStore(services.meta)

    def release_key(self, project: str) -> Ed25519PrivateKey:
        """The project's release signing key (made on first use). Read from its file each
        time: the file is the truth, also for every other server process."""
        from tinymlaas.installers.signing import release_key

        return release_key(self.services.engine.key_dir(project))

    # devices ------------------------------------------------------------------------------

    def enroll(self, project: str, name: str, *, groups: Collection[str] = (),
               profile: str | None = None,
               tags: dict[str, str] | None = None) -> tuple[FleetDevice, str]:
        """Add a device; returns it and its one-time enrollment code (shown once)."""
        groups = sorted({_check_name("group", g) for g in groups})
        tags = dict(tags or {})
        if len(groups) > 16 or len(tags) > 32 or any(len(k) > 64 or len(str(v)) > 200
                                                     for k, v in tags.items()):
            raise InvalidInputError("a device has at most 16 groups and 32 tags (keys up to "
                                    "64 characters, values up to 200)")
        if profile is not None:
            profile = self.services.get_device(profile, [project]).name
        device = FleetDevice(id=new_id("fdev"), project=project, name=_check_name("device",
                                                                                     name),
                             profile=profile, groups=groups, tags=tags)
        code = CODE_PREFIX + secrets.token_urlsafe(24)
        self.store.add_device(device, _hash(code), _now() + CODE_TTL)
        self.store.add_event(device.id, "created", "enrollment code valid for "
                             f"{CODE_TTL.total_seconds() / 3600:.0f} hours")
        return device, code

    def renew_code(self, device: FleetDevice) -> str:
        """A new enrollment code; the device's current credential stops working."""
        code = CODE_PREFIX + secrets.token_urlsafe(24)
        self.store.new_code(device.id, _hash(code), _now() + CODE_TTL)
        self.store.add_event(device.id, "re-enrolling", "new enrollment code; the old "
                             "credential is revoked")
        return code

    def revoke(self, device: FleetDevice) -> FleetDevice:
        revoked = self.store.revoke(device.id)
        self.store.move_actions(to=ActionState.cancelled, message="device revoked",
                                device_ids=[device.id], states=(ActionState.scheduled, *_OPEN))
        self.store.add_event(device.id, "revoked", "its credential no longer works")
        return revoked

    def history(self, device: FleetDevice) -> list[DeviceEvent]:
        return self.store.history(device.id)

    def jobs_for_run(self, run: Run) -> list[InferenceJob]:
        """What devices measured (accuracy, latency) running releases made from ``run``."""
        return self.store.jobs_for_run(run.id, run.project)

    # releases -----------------------------------------------------------------------------

    def create_release(self, project: str, run: Run, *, name: str | None = None,
                       atol: float | None = None, rtol: float = 0.0,
                       max_latency_ms: float | None = None) -> Release:
        """A signed release of ``run``'s installer output, with its golden input.

        Raises:
            ConflictError: the run has not succeeded, or made no installer output.
        """
        if run.status not in (RunStatus.succeeded, RunStatus.degraded):
            raise ConflictError(f"run {run.id} is {run.status.value}; only a finished run "
                                "can be released", {"run": run.id})
        packages = self.services.run_packages(run)
        if not packages:
            raise ConflictError(f"run {run.id} made no installer output; end its pipeline "
                                "with an installer such as package-python or sign-image",
                                {"run": run.id})
        package = packages[-1].artifact
        golden_sha, health = self._golden(run, package.sha256, ArtifactKind(package.kind),
                                          atol=atol, rtol=rtol, max_latency_ms=max_latency_ms)
        return self._publish(project, name=_check_name("release", name or run.name),
                             run_id=run.id, package_sha=package.sha256,
                             package_name=package.filename, package_kind=package.kind.value,
                             golden_sha=golden_sha, health=health, device_profile=run.device)

    def _golden(self, run: Run, package_sha: str, kind: ArtifactKind, *, atol: float | None,
                rtol: float, max_latency_ms: float | None) -> tuple[str | None, HealthSpec]:
        """For a wheel: the model's outputs on a few test samples, computed in a limited
        child process; other kinds carry no golden input (their check is the install)."""
        latency = max_latency_ms
        host = run.result.get("latency_ms_p50") if isinstance(run.result, dict) else None
        if latency is None and isinstance(host, int | float) and host > 0:
            latency = max(100.0, 50.0 * float(host))  # devices are slower than the host
        if kind is not ArtifactKind.python_wheel:
            return None, HealthSpec(max_latency_ms=latency)
        import zipfile

        import onnx

        from tinymlaas.formats.examples import example_arrays, run_onnx_isolated
        from tinymlaas.formats.models import onnx_tensor_specs
        from tinymlaas.installers.wheel import read_wheel

        wheel = self.services.artifacts.path(package_sha)
        info = read_wheel(wheel)
        settings = self.services.settings
        with tempfile.TemporaryDirectory(prefix="tinymlaas-golden-") as tmp:
            with zipfile.ZipFile(wheel) as archive:
                model = Path(tmp) / "model.onnx"
                model.write_bytes(archive.read(f"{info.package}/model.onnx"))
            graph = onnx.load(str(model), load_external_data=False).graph
            weights = {t.name for t in graph.initializer}
            specs = onnx_tensor_specs([v for v in graph.input if v.name not in weights])
            feed = self._samples(run, specs) or example_arrays(specs)
            outputs = run_onnx_isolated(model, feed, memory_mb=settings.step_memory_mb,
                                        timeout_s=min(settings.step_timeout_s, 300))
            golden = Path(tmp) / GOLDEN_FILE
            np.savez(golden, **{f"input/{k}": v for k, v in feed.items()},
                     **{f"output/{i}": v for i, v in enumerate(outputs)})
            sha = self._keep(golden)
        if atol is None:  # 1 % of the output range: int8 kernels differ a little by CPU
            scale = max((float(np.max(np.abs(o))) for o in outputs if o.size), default=1.0)
            atol = 0.01 * max(scale, 1e-6)
        return sha, HealthSpec(golden=GOLDEN_FILE, atol=atol, rtol=rtol,
                               max_latency_ms=latency)

    def _samples(self, run: Run, specs: list[Any]) -> dict[str, np.ndarray]:
        """The first test samples of the run's dataset, one array per model input."""
        if run.dataset_id is None:
            return {}
        from tinymlaas.formats.datasets import read_canonical, split_indices

        dataset = self.services.meta.get_dataset(run.dataset_id)
        if dataset.site is not None:  # its samples stay at the site: no golden check
            return {}
        X, _ = read_canonical(self.services.artifacts.path(dataset.artifact_sha))
        batch = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int)}
        count = min(batch) if batch else GOLDEN_SAMPLES  # a fixed batch size is kept
        rows = X[split_indices(len(X), dataset.splits)["test"][:count]]
        if len(rows) != count:
            return {}
        columns = ({n: rows[n] for n in rows.dtype.names} if rows.dtype.names else
                   {specs[0].name: rows} if len(specs) == 1 else {})
        feed = {}
        for spec in specs:
            if spec.name not in columns or list(columns[spec.name].shape[1:]) != [
                    d if isinstance(d, int) else columns[spec.name].shape[i + 1]
                    for i, d in enumerate(spec.shape[1:])]:
                return {}  # the data does not fit the packaged model: examples instead
            dtype = np.float32 if spec.dtype == "unknown" else np.dtype(spec.dtype)
            feed[spec.name] = np.ascontiguousarray(columns[spec.name]).astype(dtype)
        return feed

    def _publish(self, project: str, *, name: str, run_id: str | None, package_sha: str,
                 package_name: str, package_kind: str, golden_sha: str | None,
                 health: HealthSpec, device_profile: str | None,
                 rollback_of: str | None = None) -> Release:
        key = self.release_key(project)
        files = [self._file(package_name, package_sha, package_kind)]
        if golden_sha is not None:
            files.append(self._file(GOLDEN_FILE, golden_sha, "golden-npz"))
        for _ in range(5):  # two releases at once: the second takes the next version
            release_id, version = new_id("rel"), self.store.next_version(project)
            manifest = ReleaseManifest(
                release_id=release_id, project=project, name=name, version=version,
                run_id=run_id, created_at=_now(), device_profile=device_profile,
                package=files[0], files=files, health=health)
            envelope = sign_document(manifest.model_dump(mode="json"), key)
            try:
                return self.store.add_release(Release(
                    id=release_id, project=project, name=name, version=version, run_id=run_id,
                    package_sha=package_sha, package_name=files[0].name,
                    package_kind=package_kind, golden_sha=golden_sha,
                    device_profile=device_profile, manifest=envelope,
                    manifest_sha256=hashlib.sha256(canonical_json(envelope)).hexdigest(),
                    rollback_of=rollback_of))
            except ConflictError:
                continue
        raise ConflictError("could not take a release version; try again")

    def _file(self, name: str, sha: str, kind: str) -> ReleaseFile:
        size = self.services.artifacts.path(sha).stat().st_size
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")[:120] or "package.bin"
        if kind != "golden-npz" and safe in _RESERVED:  # would shadow the release's own files
            safe = f"package-{safe}"
        return ReleaseFile(name=safe, sha256=sha, size=size, kind=kind)

    # rollouts -----------------------------------------------------------------------------

    def deploy(self, project: str, release: Release, group: str, *,
               waves: list[int] | None = None, error_threshold: float = 0.2) -> Rollout:
        """Offer ``release`` to the devices of ``group``, wave by wave; a device's earlier
        offers that have not started are withdrawn."""
        waves = check_waves(waves)
        if not 0 <= error_threshold <= 1 or math.isnan(error_threshold):
            raise InvalidInputError("the error threshold is a failure rate from 0 to 1")
        devices = [d for d in self.store.list_devices([project], _check_name("group", group))
                   if d.revoked_at is None]
        if not devices:
            raise InvalidInputError(f"group {group!r} has no devices in project {project}; add "
                                    f"one with `tinymlaas fleet enroll NAME --group {group}`",
                                    {"group": group})
        rollout = Rollout(id=new_id("rol"), project=project, release_id=release.id,
                          version=release.version, group=group, waves=waves,
                          error_threshold=error_threshold, state=RolloutState.running,
                          message=f"wave 1 of {len(waves)} offered")
        bounds = [math.ceil(w * len(devices) / 100) for w in waves]
        actions = []
        for i, device in enumerate(sorted(devices, key=lambda d: d.name)):
            wave = next(k for k, bound in enumerate(bounds) if i < bound)
            actions.append(DeviceAction(
                id=new_id("act"), rollout_id=rollout.id, device_id=device.id,
                device_name=device.name, release_id=release.id, version=release.version,
                wave=wave, state=ActionState.offered if wave == 0 else ActionState.scheduled))
        self.store.move_actions(to=ActionState.cancelled, message=f"superseded by {rollout.id}",
                                device_ids=[d.id for d in devices],
                                states=(ActionState.scheduled, ActionState.offered))
        self.store.add_rollout(rollout, actions)
        return self.store.get_rollout(rollout.id)

    def advance(self, rollout_id: str, *, override: bool = False) -> Rollout:
        """Open the next wave when the current one has ended within the error threshold;
        pause when it has ended past it (``override``: the user resumed, go on anyway)."""
        rollout = self.store.get_rollout(rollout_id)
        while rollout.state is RolloutState.running:
            wave = [a for a in rollout.actions if a.wave == rollout.current_wave
                    and a.state is not ActionState.cancelled]
            if any(not a.state.ended for a in wave):
                break
            failed = sum(a.state in _FAILED for a in wave)
            if wave and failed / len(wave) > rollout.error_threshold and not override:
                self.store.update_rollout(rollout.id, state=RolloutState.paused, message=(
                    f"paused: {failed} of {len(wave)} devices of wave "
                    f"{rollout.current_wave + 1} failed (threshold "
                    f"{rollout.error_threshold:.0%}); resume, cancel or roll back"))
            elif rollout.current_wave + 1 < len(rollout.waves):
                nxt = rollout.current_wave + 1
                self.store.move_actions(to=ActionState.offered, message="", wave=nxt,
                                        rollout_id=rollout.id, states=(ActionState.scheduled,))
                self.store.update_rollout(rollout.id, current_wave=nxt, message=(
                    f"wave {nxt + 1} of {len(rollout.waves)} offered"))
            else:
                done = [a for a in rollout.actions if a.state is not ActionState.cancelled]
                ok = sum(a.state is ActionState.succeeded for a in done)
                self.store.update_rollout(rollout.id, state=RolloutState.finished, message=(
                    f"finished: {ok} of {len(done)} devices updated"))
            override = False
            rollout = self.store.get_rollout(rollout_id)
        return rollout

    def pause(self, rollout: Rollout) -> Rollout:
        self._expect(rollout, RolloutState.running, "paused")
        self.store.update_rollout(rollout.id, state=RolloutState.paused,
                                  message="paused by a user")
        return self.store.get_rollout(rollout.id)

    def resume(self, rollout: Rollout) -> Rollout:
        self._expect(rollout, RolloutState.paused, "resumed")
        self.store.update_rollout(rollout.id, state=RolloutState.running,
                                  message="resumed by a user")
        return self.advance(rollout.id, override=True)

    def cancel(self, rollout: Rollout) -> Rollout:
        if rollout.state in (RolloutState.finished, RolloutState.cancelled):
            raise ConflictError(f"rollout {rollout.id} is {rollout.state.value}",
                                {"rollout": rollout.id, "state": rollout.state.value})
        self.store.move_actions(to=ActionState.cancelled, message="rollout cancelled",
                                rollout_id=rollout.id,
                                states=(ActionState.scheduled, ActionState.offered))
        self.store.update_rollout(rollout.id, state=RolloutState.cancelled,
                                  message="cancelled by a user; devices that had started "
                                          "finish their install")
        return self.store.get_rollout(rollout.id)

    def rollback(self, rollout: Rollout) -> Rollout:
        """Stop ``rollout`` and roll the group back to the release it had before, as a new
        release (same files, next version: devices never go backwards in version)."""
        earlier = [r for r in self.store.list_rollouts([rollout.project])
                   if r.group == rollout.group and r.version < rollout.version]
        if not earlier:
            raise ConflictError(f"no earlier release was rolled out to group {rollout.group!r}"
                                "; there is nothing to roll back to", {"rollout": rollout.id})
        previous = self.store.get_release(earlier[0].release_id)
        if rollout.state in (RolloutState.running, RolloutState.paused):
            self.cancel(rollout)
        manifest = ReleaseManifest.model_validate(previous.manifest["signed"])
        release = self._publish(
            rollout.project, name=previous.name, run_id=previous.run_id,
            package_sha=previous.package_sha, package_name=previous.package_name,
            package_kind=previous.package_kind, golden_sha=previous.golden_sha,
            health=manifest.health, device_profile=previous.device_profile,
            rollback_of=previous.id)
        return self.deploy(rollout.project, release, rollout.group, waves=[100],
                           error_threshold=rollout.error_threshold)

    @staticmethod
    def _expect(rollout: Rollout, state: RolloutState, verb: str) -> None:
        if rollout.state is not state:
            raise ConflictError(f"rollout {rollout.id} is {rollout.state.value}; only a "
                                f"{state.value} rollout can be {verb}",
                                {"rollout": rollout.id, "state": rollout.state.value})

    # the devices' side --------------------------------------------------------------------

    def exchange(self, code: str) -> Enrollment:
        """Trade a one-time enrollment code for the device's credential."""
        token = DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)
        device = self.store.redeem_code(_hash(code), _hash(token))
        if device is None:
            raise AuthenticationError("unknown, used or expired enrollment code; make a new "
                                      "one with `tinymlaas fleet enroll NAME --renew`")
        public = self.release_key(device.project).public_key()
        self.store.add_event(device.id, "enrolled", "credential issued")
        return Enrollment(tenant=device.project, controller_id=device.id, name=device.name,
                          token=token, device_profile=device.profile,
                          public_key=public_key_pem(public), key_id=key_id(public),
                          poll_s=POLL_S)

    def authenticate(self, token: str, tenant: str, controller_id: str) -> FleetDevice:
        """The device holding ``token``; it must be the one the path names.

        Raises:
            AuthenticationError: unknown or revoked credential.
            NotFoundError: the path names another device or tenant.
        """
        device = self.store.device_by_token(_hash(token))
        if device is None:
            raise AuthenticationError("unknown or revoked device credential; enroll the "
                                      "device again")
        if device.id != controller_id or device.project != tenant:
            raise NotFoundError(f"controller {controller_id!r} not found")
        self.store.seen(device)
        return device

    def poll(self, device: FleetDevice) -> tuple[DeviceAction | None, InferenceJob | None]:
        """The device's open action (of a running rollout) and queued inference job."""
        action = self.store.open_action(device.id)
        if action is not None and \
                self.store.get_rollout(action.rollout_id, actions=False).state \
                is not RolloutState.running \
                and action.state is ActionState.offered:
            action = None  # a paused rollout offers nothing new
        return action, self.store.next_job(device.id)

    def deployment(self, device: FleetDevice, action_id: str) -> tuple[DeviceAction, Release]:
        action = self.store.get_action(action_id, device.id)
        return action, self.store.get_release(action.release_id)

    def ticket(self, device: FleetDevice, action: DeviceAction, release: Release) -> bytes:
        document = DeploymentTicket(action_id=action.id, controller_id=device.id,
                                    project=device.project, release_id=release.id,
                                    version=release.version,
                                    manifest_sha256=release.manifest_sha256,
                                    issued_at=self.store.get_rollout(
                                        action.rollout_id, actions=False)
                                    .created_at)  # the same bytes on every download
        key = self.release_key(device.project)
        return canonical_json(sign_document(document.model_dump(mode="json"), key))

    def release_file(self, device: FleetDevice, release_id: str,
                     filename: str) -> tuple[Path | bytes, str]:
        """A file of a release offered to ``device``: a blob path, or the manifest's or
        ticket's bytes; with its sha256. Anything else is not found."""
        release = self.store.get_release(release_id, [device.project])
        action = self.store.open_action(device.id)
        offered = action is not None and action.release_id == release.id
        if not offered and not self._had(device, release.id):
            raise NotFoundError(f"release {release_id!r} not found")
        if filename == "manifest.json":
            data = canonical_json(release.manifest)
            return data, hashlib.sha256(data).hexdigest()
        if filename == "ticket.json":
            if action is None or action.release_id != release.id:
                raise NotFoundError("no open deployment of this release for this device")
            data = self.ticket(device, action, release)
            return data, hashlib.sha256(data).hexdigest()
        for file in ReleaseManifest.model_validate(release.manifest["signed"]).files:
            if file.name == filename:
                return self.services.artifacts.path(file.sha256), file.sha256
        raise NotFoundError(f"release {release_id} has no file {filename!r}")

    def _had(self, device: FleetDevice, release_id: str) -> bool:
        return any(e.action_id and self.store.get_action(e.action_id, device.id).release_id
                   == release_id for e in self.store.history(device.id, limit=20))

    def feedback(self, device: FleetDevice, action_id: str, feedback: Feedback) -> DeviceAction:
        """Record a device's report; a closed action ends, and its rollout may advance."""
        action = self.store.get_action(action_id, device.id)
        status = feedback.status
        report = status.tinymlaas or AgentReport(
            stage="committed" if status.execution == "closed" and
            status.result.finished == "success" else
            "failed" if status.execution == "closed" else "downloading")
        message = "; ".join(d[:500] for d in status.details)[:2000]
        self.store.add_event(device.id, report.stage, message, action_id=action.id,
                             version=report.version or action.version)
        if status.execution == "closed" and status.result.finished == "success":
            self.store.set_installed(device.id, health="ok", version=action.version,
                                     release_id=action.release_id)
        elif report.stage == "rolled_back":
            self.store.set_installed(device.id, health="ok")  # back on its last good release
        if action.state.ended:
            return action  # late or repeated report: history only
        if status.execution == "closed":
            state = (ActionState.succeeded if status.result.finished == "success" else
                     ActionState.rolled_back if report.stage == "rolled_back" else
                     ActionState.failed)
            self.store.set_action(action.id, state, stage=report.stage, message=message,
                                  only_from=_OPEN)
            self.advance(action.rollout_id)
        elif status.execution in ("canceled", "rejected"):
            self.store.set_action(action.id, ActionState.failed, stage=report.stage,
                                  message=message or status.execution, only_from=_OPEN)
            self.advance(action.rollout_id)
        else:
            self.store.set_action(action.id, ActionState.running, stage=report.stage,
                                  message=message, only_from=_OPEN)
        return self.store.get_action(action.id, device.id)

    # inference on a device ----------------------------------------------------------------

    def request_inference(self, device: FleetDevice, dataset_ref: str | None,
                          samples: dict[str, np.ndarray] | None = None,
                          limit: int = 100) -> InferenceJob:
        """Queue inputs (the dataset's test split, or given arrays) for the device's agent
        to run on its installed release."""
        if device.release_id is None:
            raise ConflictError(f"device {device.name} has no release installed yet",
                                {"device": device.id})
        if not 1 <= limit <= MAX_INFERENCE_SAMPLES:
            raise InvalidInputError(f"limit is 1 to {MAX_INFERENCE_SAMPLES} samples")
        release = self.store.get_release(device.release_id)
        if release.golden_sha is None:
            raise ConflictError("the installed release has no model the agent can run "
                                "(only python-wheel releases do)", {"device": device.id})
        with np.load(self.services.artifacts.path(release.golden_sha),
                     allow_pickle=False) as golden:
            names = [k.removeprefix("input/") for k in golden.files if k.startswith("input/")]
            dtypes = {k.removeprefix("input/"): golden[k].dtype for k in golden.files
                      if k.startswith("input/")}
            shapes = {k.removeprefix("input/"): golden[k].shape[1:] for k in golden.files
                      if k.startswith("input/")}
        dataset_id = None
        if samples is not None:  # uploaded: input/<name> or <name>; one array for one input
            samples = {k.removeprefix("input/"): v for k, v in samples.items()}
            if len(samples) == 1 and len(names) == 1:
                samples = {names[0]: next(iter(samples.values()))}
            for name, array in samples.items():
                if name in shapes and (array.ndim < 1 or array.shape[1:] != shapes[name]
                                       or len(array) == 0 or array.dtype.kind not in "biuf"):
                    raise InvalidInputError(
                        f"samples of input {name!r} must be numbers shaped (N, "
                        f"{', '.join(map(str, shapes[name]))}); got {array.dtype}"
                        f"{list(array.shape)}")
        if samples is None:
            if dataset_ref is None:
                raise InvalidInputError("give a dataset or samples")
            dataset = self.services.meta.get_dataset(dataset_ref)
            if dataset.project != device.project:
                raise NotFoundError(f"dataset {dataset_ref!r} not found")
            dataset_id = dataset.id
            from tinymlaas.formats.datasets import read_canonical, split_indices

            X, _ = read_canonical(self.services.dataset_path(dataset))
            rows = X[split_indices(len(X), dataset.splits)["test"][:limit]]
            samples = ({n: rows[n] for n in rows.dtype.names} if rows.dtype.names
                       else {names[0]: rows} if len(names) == 1 else {})
        if set(samples) != set(names):
            raise InvalidInputError(f"the model takes inputs {names}; got {sorted(samples)}")
        arrays = {f"input/{n}": np.ascontiguousarray(a[:limit]).astype(dtypes[n])
                  for n, a in samples.items()}
        count = min(len(a) for a in arrays.values())
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        sha = self._put_bytes(buffer.getvalue(), "inputs.npz")
        return self.store.add_job(InferenceJob(
            id=new_id("inf"), project=device.project, device_id=device.id,
            dataset_id=dataset_id, inputs_sha=sha, samples=count, version=device.version))

    def _put_bytes(self, data: bytes, filename: str) -> str:
        with tempfile.TemporaryDirectory(prefix="tinymlaas-fleet-") as tmp:
            path = Path(tmp) / filename
            path.write_bytes(data)
            return self._keep(path)

    def _keep(self, path: Path) -> str:
        """Store a file as a ``file`` artifact; its sha256."""
        sha, size = self.services.artifacts.put_file(path)
        self.services.meta.add_artifact(Artifact(sha256=sha, kind=ArtifactKind.file,
                                                 size_bytes=size, filename=path.name))
        return sha

    def take_job(self, device: FleetDevice, job_id: str) -> tuple[InferenceJob, Path]:
        """The device's job and its inputs file; a queued job starts running (a finished
        one stays finished)."""
        job = self.store.get_job(job_id, device_id=device.id)
        if job.state == "queued":
            self.store.update_job(job.id, state="running")
        return job, self.services.artifacts.path(job.inputs_sha)

    def inputs_of(self, device: FleetDevice, job_id: str) -> Path:
        job = self.store.get_job(job_id, device_id=device.id)
        return self.services.artifacts.path(job.inputs_sha)

    def jobs(self, device: FleetDevice) -> list[InferenceJob]:
        """The device's inference jobs, newest first."""
        return self.store.jobs_of(device.id)

    def inference_result(self, device: FleetDevice, job_id: str, latency_ms: list[float],
                         outputs: bytes) -> InferenceJob:
        """Store what the device computed, and score it against the dataset's labels."""
        job = self.store.get_job(job_id, device_id=device.id)
        if job.state in ("done", "failed"):
            raise ConflictError(f"inference job {job_id} has ended", {"job": job_id})
        if len(outputs) > MAX_RESULT_BYTES:
            raise PayloadTooLargeError("the outputs are larger than 64 MiB")
        if len(latency_ms) != job.samples or any(
                not (0 <= v < 1e7) for v in latency_ms):
            raise InvalidInputError(f"send one latency (ms) per sample ({job.samples})")
        arrays = read_npz(outputs, "outputs must be an NPZ holding output/0, output/1, ...")
        if "output/0" not in arrays:
            raise InvalidInputError("outputs must be an NPZ holding output/0, output/1, ...")
        first = arrays["output/0"]
        metrics = {"latency_ms_p50": float(np.percentile(latency_ms, 50)),
                   "latency_ms_p95": float(np.percentile(latency_ms, 95)),
                   "samples": float(job.samples)}
        if job.dataset_id is not None and len(first) == job.samples and first.ndim == 2:
            from tinymlaas.formats.datasets import read_canonical, split_indices

            dataset = self.services.meta.get_dataset(job.dataset_id)
            X, y = read_canonical(self.services.artifacts.path(dataset.artifact_sha))
            labels = y[split_indices(len(X), dataset.splits)["test"][:job.samples]]
            if labels.ndim == 1 and dataset.num_classes:
                metrics["accuracy"] = float(np.mean(np.argmax(first, axis=1) == labels))
        sha = self._put_bytes(outputs, "outputs.npz")
        self.store.update_job(job.id, state="done", latency_ms=[float(v) for v in latency_ms],
                              outputs_sha=sha, metrics=metrics, finished_at=_now())
        self.store.add_event(device.id, "inference", f"{job.samples} samples, p50 "
                             f"{metrics['latency_ms_p50']:.3f} ms")
        return self.store.get_job(job.id)


class FleetView:
    """One user's view of the fleet: their projects only; changes need owner or editor."""

    def __init__(self, fleet: Fleet, ws: Any) -> None:
        self.fleet = fleet
        self.ws = ws

    def device(self, ref: str, *, write: bool = False) -> FleetDevice:
        device = self.fleet.store.get_device(ref, self.ws.projects)
        if write:
            self.ws.project_id(device.project, write=True)
        return device

    def enroll(self, name: str, *, groups: Collection[str] = (), profile: str | None = None,
               tags: dict[str, str] | None = None,
               project: str | None = None) -> tuple[FleetDevice, str]:
        return self.fleet.enroll(self.ws.project_id(project, write=True), name,
                                 groups=groups, profile=profile, tags=tags)

    def devices(self, project: str | None = None,
                group: str | None = None) -> list[FleetDevice]:
        scope = {self.ws.project_id(project)} if project else self.ws.projects
        return self.fleet.store.list_devices(scope, group)

    def release(self, ref: str) -> Release:
        return self.fleet.store.get_release(ref, self.ws.projects)

    def releases(self, project: str | None = None) -> list[Release]:
        scope = {self.ws.project_id(project)} if project else self.ws.projects
        return self.fleet.store.list_releases(scope)

    def create_release(self, run_ref: str, **options: Any) -> Release:
        run = self.ws.get_run(run_ref)
        return self.fleet.create_release(self.ws.project_id(run.project, write=True), run,
                                         **options)

    def deploy(self, group: str, *, run: str | None = None, release: str | None = None,
               waves: list[int] | None = None, error_threshold: float = 0.2,
               **release_options: Any) -> Rollout:
        if (run is None) == (release is None):
            raise InvalidInputError("give a run or a release to deploy")
        chosen = (self.release(release) if release is not None
                  else self.create_release(run or "", **release_options))
        return self.fleet.deploy(self.ws.project_id(chosen.project, write=True), chosen, group,
                                 waves=waves, error_threshold=error_threshold)

    def rollout(self, ref: str, *, write: bool = False) -> Rollout:
        rollout = self.fleet.store.get_rollout(ref, self.ws.projects)
        if write:
            self.ws.project_id(rollout.project, write=True)
        return rollout

    def rollouts(self, project: str | None = None) -> list[Rollout]:
        scope = {self.ws.project_id(project)} if project else self.ws.projects
        return self.fleet.store.list_rollouts(scope)

    def inference(self, device_ref: str, dataset: str | None, limit: int = 100, *,
                  samples: bytes | None = None) -> InferenceJob:
        """The dataset's test split, or the arrays of an uploaded NPZ (``samples``)."""
        device = self.device(device_ref, write=True)
        if samples is not None:
            arrays = read_npz(samples, "samples must be an NPZ of arrays, one per model "
                              "input (input/<name> or <name>), samples first")
            return self.fleet.request_inference(device, None, arrays, limit=limit)
        dataset_id = self.ws.get_dataset(dataset, device.project).id if dataset else None
        return self.fleet.request_inference(device, dataset_id, limit=limit)

    def devices_running(self, run: Run) -> list[FleetDevice]:
        """The project's devices whose committed release was made from ``run``."""
        made = {r.id for r in self.fleet.store.list_releases([run.project])
                if r.run_id == run.id}
        return [d for d in self.fleet.store.list_devices([run.project])
                if d.release_id in made and d.revoked_at is None]

    def job(self, job_id: str) -> InferenceJob:
        return self.fleet.store.get_job(job_id, projects=self.ws.projects)

    def installed(self, device: FleetDevice) -> Release | None:
        return self.fleet.store.get_release(device.release_id) if device.release_id else None

    def device_names(self, project: str) -> dict[str, str]:
        return {d.id: d.name for d in self.fleet.store.list_devices([self.ws.project_id(
            project)])}

    # pages of the lists (keyset pagination over lists held in memory) --------------------

    def page_devices(self, limit: int, after: Key | None = None, project: str | None = None,
                     group: str | None = None) -> Page[FleetDevice]:
        """By project and name."""
        return page_list(self.devices(project, group), lambda d: (d.project, d.name),
                         limit, after)

    def page_releases(self, limit: int, after: Key | None = None,
                      project: str | None = None) -> Page[Release]:
        """By project, newest version first."""
        return page_list(self.releases(project),
                         lambda r: (r.project, f"{_NEWEST - r.version:020d}", r.id),
                         limit, after)

    def page_rollouts(self, limit: int, after: Key | None = None,
                      project: str | None = None) -> Page[Rollout]:
        """Newest first."""
        return page_list(self.rollouts(project), lambda r: (
            f"{_NEWEST - int(r.created_at.timestamp() * 1e6):020d}", r.id), limit, after)
