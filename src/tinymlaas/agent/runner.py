"""The agent's state machine: recover, poll, deploy, report.

One deployment goes through these stages, each reported to the server as DDI feedback
(``status.tinymlaas.stage``)::

    downloading -> downloaded -> verified -> installed -> switched -> health
        -> committed                 (closed / success)
        -> rolled_back               (closed / failure: the health check failed)
    refused                          (closed / failure: a check failed, nothing installed)
    failed                           (closed / failure: the install itself failed)

In gateway mode (``signed-image``) the health stage is the MCU's update over SMP: the new
image confirmed commits; the MCU back on its previous image (MCUboot reverted it, or it was
never changed) is ``rolled_back``; an MCU that keeps an unhealthy image (its application
confirmed it at boot), that did not come back in time, or that already ran the new image
unconfirmed is ``failed``, with the gateway's detail of what it runs: a rollback would not
be true.

``state.json`` follows the trial: ``installing`` while its slot is written, ``switching``
before ``current`` is touched, ``switched`` once it points to the new slot. A final
feedback is saved in ``state.json`` in the same write as the state it reports, then sent;
one that could not be delivered is sent again at the next start or poll, so the server
always learns the outcome.

Recovery, on every start before the first poll (never bricked):

- a trial still ``installing``: its half-written slot is discarded; the server still offers
  the action, so it is downloaded (resumed) and installed again;
- a trial ``switching`` or ``switched``: ``current`` goes back to the committed slot (or is
  removed when nothing was ever committed), the trial slot is discarded and the action is
  reported ``rolled_back``;
- a stray ``current.new`` is removed, ``current`` is repaired to the committed slot, and
  leftover ``slots/*.partial`` folders are removed.
"""

from __future__ import annotations

import importlib
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinymlaas.agent import faults
from tinymlaas.agent.ddi import DdiClient
from tinymlaas.agent.health import HEALTH_TIMEOUT_S, HealthResult, check_files, check_python
from tinymlaas.agent.slots import (
    current_slot,
    discard_slot,
    install_slot,
    other_slot,
    point_current,
    slot_intact,
)
from tinymlaas.agent.store import (
    AgentConfig,
    Installed,
    Layout,
    Trial,
    load_state,
    save_state,
)
from tinymlaas.agent.verify import VerifiedRelease, check_artifact, verify_release
from tinymlaas.contracts.ota import (
    MAX_ENVELOPE_BYTES,
    AgentReport,
    DdiArtifact,
    DeploymentBase,
    Feedback,
    FeedbackResult,
    FeedbackStatus,
    load_public_key,
)
from tinymlaas.errors import (
    AuthenticationError,
    InvalidInputError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    TinymlaasError,
)

__all__ = ["Agent", "Outcome", "parse_sleep"]

_ACTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SUPPORTED_KINDS = ("python-wheel", "c-bundle", "docker-context", "signed-image")


def parse_sleep(text: str, default: float) -> float:
    """Seconds of a DDI ``HH:MM:SS`` polling sleep (``default`` when malformed)."""
    match = re.fullmatch(r"(\d{1,3}):([0-5]\d):([0-5]\d)", text or "")
    if match is None:
        return default
    hours, minutes, seconds = (int(g) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


@dataclass
class Outcome:
    """What one poll (or the recovery) did: the agent's ``--json`` summary."""

    outcome: str  # idle | committed | rolled_back | refused | failed | recovered | ...
    action_id: str | None = None
    version: int | None = None
    slot: str | None = None
    details: list[str] = field(default_factory=list)
    #: The inference job run at this poll: ``{"job", "samples"}``.
    inference: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "action_id": self.action_id, "version": self.version,
                "slot": self.slot, "details": self.details, "inference": self.inference}


class _Refused(Exception):
    """A check failed: report ``refused``, install nothing."""


#: Gateway outcomes, not committed, after which the MCU is not known to run its previous
#: image (``unchanged`` uncommitted: it already ran the new image, not confirmed).
_MCU_NOT_BACK = ("unhealthy", "unknown", "unchanged")


@dataclass(frozen=True)
class _GatewayHealth(HealthResult):
    """The health stage of a signed-image: the gateway's outcome (see
    :class:`tinymlaas.agent.gateway.GatewayResult`), ``error`` when it raised before the
    MCU's image changed."""

    outcome: str = "error"


def _feedback(stage: str, *, execution: str = "proceeding", finished: str = "none",
              details: list[str] | None = None, version: int | None = None,
              slot: str | None = None, latency_ms: float | None = None) -> dict[str, Any]:
    feedback = Feedback(
        status=FeedbackStatus(
            execution=execution, result=FeedbackResult(finished=finished),
            details=[d[:1000] for d in (details or [])][:50],
            tinymlaas=AgentReport(stage=stage, version=version, slot=slot,
                                  latency_ms=latency_ms)),
        timestamp=int(time.time() * 1000))
    return feedback.model_dump(mode="json", by_alias=True, exclude_none=True)


def _log(message: str) -> None:
    print(f"agent: {message}", file=sys.stderr, flush=True)


class Agent:
    """An enrolled device's agent over its root directory.

    Args:
        gateway: ``--gateway`` address: signed-image releases are handed to the gateway
            installer for the MCU behind it.
        log: Where progress lines go (stderr by default).
    """

    def __init__(self, layout: Layout, config: AgentConfig, *, gateway: str | None = None,
                 health_timeout_s: float = HEALTH_TIMEOUT_S,
                 log: Callable[[str], None] = _log) -> None:
        self.layout = layout
        self.config = config
        self.gateway = gateway
        self.health_timeout_s = health_timeout_s
        self.log = log
        self.anchor = load_public_key(config.public_key)
        self.client = DdiClient(config.server, config.tenant, config.controller_id,
                                config.token)
        self.state = load_state(layout)

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ state and reports

    def _save(self) -> None:
        save_state(self.layout, self.state)

    def _report(self, action_id: str, stage: str, detail: str | None = None,
                **values: Any) -> None:
        """An intermediate stage: best effort (the final feedback is what must arrive)."""
        self.log(f"{action_id}: {stage}" + (f": {detail}" if detail else ""))
        try:
            self.client.feedback(action_id, _feedback(stage, details=[detail] if detail else [],
                                                      **values))
        except TinymlaasError as exc:
            self.log(f"{action_id}: could not report {stage}: {exc}")

    def _final(self, action_id: str, stage: str, success: bool, details: list[str],
               **values: Any) -> dict[str, Any]:
        """Record a final feedback in the state (the caller saves it with what it reports)."""
        feedback = _feedback(stage, execution="closed",
                             finished="success" if success else "failure",
                             details=details, **values)
        self.state.pending[action_id] = feedback
        self.log(f"{action_id}: {stage}: {'; '.join(details)}")
        return feedback

    def flush(self) -> None:
        """Send the final feedbacks not yet delivered."""
        for action_id, feedback in list(self.state.pending.items()):
            try:
                self.client.feedback(action_id, feedback)
            except ServiceUnavailableError as exc:
                self.log(f"{action_id}: final feedback not delivered yet: {exc}")
                return
            except AuthenticationError:
                raise  # kept for when the device has a working credential again
            except TinymlaasError as exc:  # the server no longer wants it (404, 4xx)
                self.log(f"{action_id}: final feedback refused by the server: {exc}")
            self.state.finish(action_id, feedback)
            self._save()

    # ------------------------------------------------------------------ recovery

    def recover(self) -> Outcome | None:
        """Bring the root back to a complete committed slot; see the module docstring."""
        self.layout.create()
        layout, state = self.layout, self.state
        outcome = None
        if layout.current_new.is_symlink() or layout.current_new.exists():
            layout.current_new.unlink()
        trial = state.trial
        committed_slot = state.committed.slot if state.committed else None
        if trial is not None:
            point_current(layout, committed_slot)
            if trial.slot != committed_slot:
                discard_slot(layout, trial.slot)
            state.trial = None
            if trial.phase == "installing":
                self.log(f"{trial.action_id}: discarded the half-written slot {trial.slot}")
                self._save()
            else:
                back = (f"version {state.committed.version} (slot {committed_slot})"
                        if state.committed else "no release (nothing was committed before)")
                detail = (f"the agent stopped during the trial of version {trial.version} "
                          f"(phase {trial.phase}, before its health check passed); "
                          f"rolled back to {back}")
                self._final(trial.action_id, "rolled_back", False, [detail],
                            version=state.committed.version if state.committed else None,
                            slot=committed_slot)
                self._save()
                outcome = Outcome("rolled_back", trial.action_id,
                                  state.committed.version if state.committed else None,
                                  committed_slot, [detail])
        if current_slot(layout) != committed_slot:
            self.log(f"repairing current -> {committed_slot or '(none)'}")
            point_current(layout, committed_slot)
        for partial in layout.slots.glob("*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
        return outcome

    # ------------------------------------------------------------------ polling

    def poll_once(self) -> tuple[Outcome, float]:
        """One poll and whatever it asks for; the outcome and the seconds until the next."""
        self.flush()
        base = self.client.poll()
        sleep = parse_sleep(base.config.polling.sleep, float(self.config.poll_s))
        link = base.links.get("deploymentBase")
        outcome = Outcome("idle")
        action_id = link.href.rstrip("/").rsplit("/", 1)[-1].split("?")[0] if link else None
        self._clean_downloads(keep=action_id)
        if link is not None and action_id is not None:
            outcome = self.deploy(action_id, link.href)
        inference = base.links.get("inference")
        if inference is not None:
            from tinymlaas.agent.inference import run_inference

            done = run_inference(self, inference.href)
            if done is not None:
                outcome.inference = {"job": done.job_id, "samples": done.samples}
        return outcome, sleep

    def _clean_downloads(self, keep: str | None) -> None:
        """Remove the downloads of actions no longer offered (withdrawn or cancelled)."""
        if not self.layout.downloads.is_dir():
            return
        for folder in self.layout.downloads.iterdir():
            if folder.name != keep:
                shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ one deployment

    def deploy(self, action_id: str, href: str) -> Outcome:
        if not _ACTION.fullmatch(action_id):
            raise InvalidInputError(f"the server offers an action with an unusable id "
                                    f"{action_id[:80]!r}")
        if action_id in self.state.finished or action_id in self.state.pending:
            feedback = self.state.finished.get(action_id) or self.state.pending[action_id]
            self.state.pending[action_id] = feedback
            self._save()
            self.flush()
            stage = feedback["status"]["tinymlaas"]["stage"]
            return Outcome(f"already-{stage}", action_id)
        deployment = self.client.deployment(href)
        folder = self.layout.downloads / action_id
        folder.mkdir(parents=True, exist_ok=True)
        try:
            release, files = self._fetch(action_id, deployment, folder)
        except _Refused as exc:
            return self._refuse(action_id, str(exc), folder)
        except (InvalidInputError, PayloadTooLargeError) as exc:
            return self._refuse(action_id, exc.message, folder)
        return self._install(action_id, release, files, folder)

    def _refuse(self, action_id: str, reason: str, folder: Path) -> Outcome:
        self._final(action_id, "refused", False, [f"refused: {reason}"])
        self._save()
        shutil.rmtree(folder, ignore_errors=True)
        self.flush()
        return Outcome("refused", action_id, details=[reason])

    def _fetch(self, action_id: str, deployment: DeploymentBase,
               folder: Path) -> tuple[VerifiedRelease, dict[str, Path]]:
        chunks = [c for c in deployment.deployment.chunks if c.part == "model"]
        if len(chunks) != 1:
            raise _Refused("the deployment has no single chunk of part 'model'")
        artifacts: dict[str, DdiArtifact] = {a.filename: a for a in chunks[0].artifacts}
        for name in ("manifest.json", "ticket.json"):
            art = artifacts.get(name)
            if art is None:
                raise _Refused(f"the deployment has no {name}")
            if art.size > MAX_ENVELOPE_BYTES:
                raise _Refused(f"{name} is {art.size} bytes, more than {MAX_ENVELOPE_BYTES}")
        self._report(action_id, "downloading")
        envelopes = {name: self._download(artifacts[name], folder, name).read_bytes()
                     for name in ("manifest.json", "ticket.json")}
        committed = self.state.committed
        release = verify_release(
            envelopes["manifest.json"], envelopes["ticket.json"], self.anchor,
            tenant=self.config.tenant, controller_id=self.config.controller_id,
            action_id=action_id, device_profile=self.config.device_profile,
            floor_version=max(self.state.floor_version, committed.version if committed else 0))
        manifest = release.manifest
        if chunks[0].version != str(manifest.version):
            raise _Refused(f"the deployment says version {chunks[0].version}, the signed "
                           f"manifest {manifest.version}")
        if manifest.package.kind not in SUPPORTED_KINDS:
            raise _Refused(f"this agent installs {', '.join(SUPPORTED_KINDS)}, not "
                           f"{manifest.package.kind!r}")
        if manifest.package.kind == "signed-image" and not self.gateway:
            raise _Refused("a signed-image is for an MCU behind a gateway; run the agent with "
                           "--gateway ADDRESS")
        wanted = {f.name: f for f in manifest.files}
        wanted.setdefault(manifest.package.name, manifest.package)
        if wanted[manifest.package.name].sha256 != manifest.package.sha256:
            raise _Refused("the manifest lists its package twice with different digests")
        for name, release_file in wanted.items():
            check_artifact(artifacts.get(name), release_file)
        files: dict[str, Path] = {}
        order = sorted(wanted, key=lambda n: n != manifest.package.name)  # the package first
        for name in order:
            release_file = wanted[name]
            hook = (lambda: faults.fault("mid-download")) \
                if name == manifest.package.name else None
            files[name] = self.client.download(
                artifacts[name].links["download-http"].href, folder / name,
                size=release_file.size, sha256=release_file.sha256, first_chunk=hook)
        self._report(action_id, "downloaded", f"{len(files)} file(s)",
                     version=manifest.version)
        faults.fault("after-download")
        self._report(action_id, "verified", "signatures, ticket, anti-rollback and sha256 "
                     "of every file checked", version=manifest.version)
        return release, files

    def _download(self, artifact: DdiArtifact, folder: Path, name: str) -> Path:
        link = artifact.links.get("download-http")
        if link is None:
            raise _Refused(f"{name} has no download-http link")
        return self.client.download(link.href, folder / name, size=artifact.size,
                                    sha256=artifact.hashes.sha256.lower())

    def _install(self, action_id: str, release: VerifiedRelease, files: dict[str, Path],
                 folder: Path) -> Outcome:
        manifest = release.manifest
        state, layout = self.state, self.layout
        previous = state.committed
        slot = other_slot(previous.slot if previous else None)
        trial = Trial(slot=slot, version=manifest.version, release_id=manifest.release_id,
                      action_id=action_id, kind=manifest.package.kind,
                      package=manifest.package.name, package_sha256=manifest.package.sha256,
                      phase="installing")
        state.trial = trial
        self._save()
        try:
            trial.import_name = install_slot(layout, slot, release, files)
        except TinymlaasError as exc:
            discard_slot(layout, slot)
            state.trial = None
            self._final(action_id, "failed", False, [f"install failed: {exc.message}"],
                        version=manifest.version)
            self._save()
            shutil.rmtree(folder, ignore_errors=True)
            self.flush()
            return Outcome("failed", action_id, manifest.version, details=[exc.message])
        self._report(action_id, "installed", f"slot {slot}", version=manifest.version, slot=slot)

        trial.phase = "switching"
        self._save()
        point_current(layout, slot, before_replace=lambda: faults.fault("before-replace"))
        faults.fault("after-replace")
        trial.phase = "switched"
        self._save()
        self._report(action_id, "switched", f"current -> slots/{slot}",
                     version=manifest.version, slot=slot)
        faults.fault("after-switch")

        health = self._health(trial, release, files)
        self._report(action_id, "health", health.detail, version=manifest.version, slot=slot,
                     latency_ms=health.latency_ms)
        if health.ok:
            state.committed = Installed.model_validate(trial.model_dump(exclude={"phase"}))
            state.floor_version = max(state.floor_version, manifest.version)
            state.trial = None
            self._final(action_id, "committed", True,
                        [f"version {manifest.version} committed in slot {slot}: "
                         f"{health.detail}"],
                        version=manifest.version, slot=slot, latency_ms=health.latency_ms)
            self._save()
            outcome = Outcome("committed", action_id, manifest.version, slot, [health.detail])
        else:
            back = previous.slot if previous else None
            point_current(layout, back)
            state.trial = None
            what = (f"version {previous.version} (slot {back})" if previous
                    else "no release (nothing was committed before)")
            if isinstance(health, _GatewayHealth) and health.outcome in _MCU_NOT_BACK:
                # The MCU may run the new image: not a rollback, whatever the gateway's slot.
                detail = (f"the MCU update did not complete: {health.detail}; the gateway "
                          f"keeps {what}")
                self._final(action_id, "failed", False, [detail], version=manifest.version)
                self._save()
                discard_slot(layout, slot)
                shutil.rmtree(folder, ignore_errors=True)
                self.flush()
                return Outcome("failed", action_id, manifest.version, details=[detail])
            detail = f"health check failed: {health.detail}; rolled back to {what}"
            self._final(action_id, "rolled_back", False, [detail],
                        version=previous.version if previous else None, slot=back,
                        latency_ms=health.latency_ms)
            self._save()
            discard_slot(layout, slot)
            outcome = Outcome("rolled_back", action_id,
                              previous.version if previous else None, back, [detail])
        shutil.rmtree(folder, ignore_errors=True)
        self.flush()
        return outcome

    def _health(self, trial: Trial, release: VerifiedRelease,
                files: dict[str, Path]) -> HealthResult:
        manifest = release.manifest
        slot_dir = self.layout.slot(trial.slot)
        expected = {f.name: f.sha256 for f in manifest.files}
        expected[manifest.package.name] = manifest.package.sha256
        problems = slot_intact(self.layout, trial.slot, expected)
        if problems:
            return check_files(problems)
        if trial.kind == "python-wheel":
            golden = manifest.health.golden
            return check_python(slot_dir / "content", trial.import_name or "",
                                slot_dir / "release" / golden if golden else None,
                                manifest.health, timeout_s=self.health_timeout_s,
                                started=lambda: faults.fault("health"))
        if trial.kind == "signed-image":
            return self._gateway(trial, slot_dir / "release" / manifest.package.name)
        return check_files(problems)

    def _gateway(self, trial: Trial, package: Path) -> HealthResult:
        # Loaded only for signed-image releases (it needs the MCU transport's packages).
        faults.fault("health")
        try:
            gateway = importlib.import_module("tinymlaas.agent.gateway")
            result = gateway.install_package(
                package, self.gateway or "",
                on_stage=lambda stage, detail: self._report(
                    trial.action_id, "health", f"gateway {stage}: {detail}",
                    version=trial.version, slot=trial.slot),
                timeout_s=self.health_timeout_s)
        except Exception as exc:  # the MCU's transport: whatever failed, the trial is over
            # Raised before the reset (bad package, no answer, upload or test refused): the
            # MCU still runs its previous image.
            detail = exc.message if isinstance(exc, TinymlaasError) else f"{exc}"
            return _GatewayHealth(False, f"the gateway could not update the MCU: {detail}")
        return _GatewayHealth(bool(result.committed), str(result.detail),
                              outcome=str(result.outcome))

    # ------------------------------------------------------------------ the loop

    def run(self, once: bool = False,
            sleep: Callable[[float], None] = time.sleep) -> Outcome:
        """Recover, then poll (once, or until interrupted); the last outcome."""
        recovered = self.recover()
        try:
            self.flush()
        except TinymlaasError as exc:
            self.log(f"reports not delivered yet: {exc}")
        if once:
            outcome, _ = self.poll_once()
            if recovered is not None and outcome.outcome == "idle":
                return recovered
            return outcome
        while True:
            try:
                _, wait = self.poll_once()
            except AuthenticationError:
                raise  # the credential was revoked: stop, a person must look
            except TinymlaasError as exc:
                self.log(f"{exc.message}; trying again in {self.config.poll_s} s")
                wait = float(self.config.poll_s)
            sleep(max(1.0, wait))
