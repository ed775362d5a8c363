"""The run engine.

A run is a pipeline applied to (model, dataset, device). For each step the engine computes
the step key ``sha256(input sha, transformer@version, canonical params, dataset sha when
used)``; a key with a stored output is a cache hit and is not rerun, which also makes a
rerun of a failed run resume after its last finished step. Other steps go to the executor,
one worker process each. Then the baseline and the output are evaluated the same way, the
output against the baseline's outputs. The baseline is the float32 input model in the
runtime that measures the output (its ONNX export for ONNX Runtime, the same compiler for
generated C), so no ratio compares two runtimes.

Several processes may share one database (servers, CLI runs). A run being executed holds a
lease in the metadata store: taken atomically when it moves to ``running``, renewed by one
heartbeat thread per engine every third of the lease's life, released with the run's
outcome. Only a ``running`` run whose lease has expired was left by a process that stopped;
:meth:`Engine.recover_expired` marks those failed (a rerun resumes them).

A run made with a site sends its jobs (steps and evaluations) to that site's executor
(``site_executor``: the Celery executor of :mod:`tinymlaas.executors.celery`); every other
run uses the engine's own executor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tinymlaas.artifacts import LocalArtifactStore, sha256_file
from tinymlaas.contracts.jobs import (
    ArtifactRef,
    DatasetRef,
    EvaluateJob,
    JobResult,
    SiteData,
    TransformJob,
)
from tinymlaas.domain import (
    Artifact,
    ArtifactKind,
    Dataset,
    Device,
    Evaluation,
    Model,
    Pipeline,
    PipelineStep,
    Run,
    RunStatus,
    StepRecord,
    StepStatus,
)
from tinymlaas.domain.entities import EVALUABLE_KINDS, FILE_NAMES
from tinymlaas.domain.quality import fidelity_verdict
from tinymlaas.errors import ConflictError, IncompatibleChainError, InvalidInputError
from tinymlaas.evaluation.evaluate import EVALUATION_VERSION
from tinymlaas.executors.base import Executor
from tinymlaas.executors.procs import process_tag
from tinymlaas.store import MetadataStore
from tinymlaas.store.metadata import new_id
from tinymlaas.transformers.registry import get_transformer, validate_params

__all__ = ["Engine", "PlannedStep", "RunEvent", "lease_owner", "step_key"]

log = logging.getLogger("tinymlaas.engine")



@dataclass
class RunEvent:
    """Progress of a run, for live displays: a step (by index) or ``evaluate``."""

    run_id: str
    stage: int | str
    status: str
    progress: float = 0.0
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


EventCallback = Callable[[RunEvent], None]


@dataclass
class PlannedStep:
    spec: PipelineStep
    transformer: str
    version: str
    params: BaseModel
    input_kind: ArtifactKind
    output_kind: ArtifactKind
    needs: str
    file_params: tuple[str, ...] = ()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def step_key(input_sha: str, transformer: str, version: str, params: dict[str, Any],
             dataset_sha: str | None, project: str) -> str:
    """The cache key of a step. It includes the run's project: a cache hit, its speed and
    its metrics would otherwise tell one user what another has already run."""
    payload = canonical_json([input_sha, f"{transformer}@{version}", params, dataset_sha,
                              project])
    return hashlib.sha256(payload.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def lease_owner() -> str:
    """This process as a lease owner: ``host:pid:process start`` (a reused pid differs)."""
    return f"{socket.gethostname()[:150]}:{os.getpid()}:{process_tag(os.getpid())}"


INTERRUPTED = ("interrupted: the process running it stopped; rerun it to resume from the "
               "last finished step")


class Engine:
    """Runs pipelines against the stores through an executor."""

    def __init__(self, meta: MetadataStore, artifacts: LocalArtifactStore, executor: Executor,
                 *, workers: int = 2,
                 devices: Callable[[str, str], Device] | None = None,
                 lease_ttl_s: float = 60.0, owner: str | None = None,
                 keys_root: Path | None = None,
                 site_executor: Callable[[str, str], Executor] | None = None) -> None:
        self.meta = meta
        self.artifacts = artifacts
        self.executor = executor
        # (site id, run id) -> the executor of the run's jobs on that site's workers
        self.site_executor = site_executor
        self._sites: dict[str, str] = {}  # runs being executed at a site: their site ids
        self.workers = workers
        self.devices = devices
        self.keys_root = keys_root
        self.lease_ttl_s = lease_ttl_s
        self.owner = owner or lease_owner()
        self._active: dict[str, Any] = {}
        self._cancelled: set[str] = set()
        self._busy: set[str] = set()  # runs this engine executes or recovers right now
        self._leased: set[str] = set()  # runs it executes under a lease (the heartbeat's)
        self._heartbeat: threading.Thread | None = None
        self._lock = threading.Lock()

    # planning -----------------------------------------------------------------------------

    def plan(self, pipeline: Pipeline, model_kind: ArtifactKind, has_dataset: bool,
             device: Device | None = None) -> list[PlannedStep]:
        """Validate every step, the chain of artifact kinds and the target before anything
        runs."""
        planned: list[PlannedStep] = []
        kind = model_kind
        for index, step in enumerate(pipeline.steps, start=1):
            where = f"step {index} "
            transformer = get_transformer(step.transformer)
            params = validate_params(step.transformer, step.params, where)
            if kind not in transformer.accepts:
                hint = " (add export-onnx before it)" if kind in {
                    ArtifactKind.torch_exported, ArtifactKind.torchscript} and \
                    ArtifactKind.onnx in transformer.accepts else ""
                if kind is ArtifactKind.onnx and step.transformer == "export-onnx":
                    hint = (" (the model is ONNX already: leave export-onnx out, or run the "
                            "auto-int8 template)" if index == 1 else
                            " (its input is ONNX already: leave this export-onnx out)")
                raise IncompatibleChainError(
                    f"{where}({step.transformer}) takes {', '.join(sorted(transformer.accepts))}"
                    f" but receives {kind}{hint}",
                    {"step": index, "transformer": step.transformer, "receives": kind.value})
            if transformer.needs != "none" and not has_dataset:
                raise InvalidInputError(f"{where}({step.transformer}) needs a dataset "
                                        f"({transformer.needs} split); give the run one")
            try:
                transformer.check_device(device, params)
            except InvalidInputError as exc:
                raise IncompatibleChainError(
                    f"{where}({step.transformer}) cannot run for "
                    f"{device.name if device else 'a run without a device'}: {exc.message}",
                    {"step": index, "transformer": step.transformer,
                     "device": device.name if device else None}) from None
            out_kind = transformer.output_kind(kind, params)
            planned.append(PlannedStep(step, step.transformer, transformer.version, params, kind,
                                       out_kind, transformer.needs, transformer.file_params))
            kind = out_kind
        return planned

    @staticmethod
    def evaluates(pipeline: Pipeline, planned: list[PlannedStep],
                  model_kind: ArtifactKind) -> bool:
        """Whether a run of ``pipeline`` ends with an evaluation (which needs a dataset): it
        measures the last model the pipeline made (an installer's input when the pipeline
        ends in one), or the input model itself."""
        kinds = [model_kind, *(p.output_kind for p in planned)]
        return pipeline.evaluate and any(kind in EVALUABLE_KINDS for kind in kinds)

    def create_run(self, pipeline: Pipeline, model: Model, dataset: Dataset | None,
                   device: str | None = None, name: str | None = None,
                   project: str | None = None, site: str | None = None) -> Run:
        """Plan and record a pending run (``site``: the id of the site whose workers run
        its steps)."""
        target = (self.devices(device, project or model.project)
                  if device and self.devices else None)
        planned = self.plan(pipeline, model.kind, has_dataset=dataset is not None,
                            device=target)
        if dataset is None and self.evaluates(pipeline, planned, model.kind):
            raise InvalidInputError(
                "the run evaluates its output, which needs a dataset: give the run one, or "
                "set 'evaluate: false' in the pipeline", {"field": "dataset"})
        if dataset is not None and model.inputs:
            self._check_inputs(model, dataset)
        run = Run(
            id=new_id("run"), name=name or pipeline.name,
            project=project or model.project, model_id=model.id,
            dataset_id=dataset.id if dataset else None,
            device=device, site=site, pipeline=pipeline,
            steps=[StepRecord(index=i, transformer=p.transformer,
                              params=p.params.model_dump(mode="json"))
                   for i, p in enumerate(planned)])
        return self.meta.add_run(run)

    def _check_inputs(self, model: Model, dataset: Dataset) -> None:
        """The dataset holds an array of a fitting kind for every model input."""
        from tinymlaas.formats.datasets import check_input_fields, check_model_inputs

        try:
            if dataset.site is not None:  # as its site's worker described its arrays
                check_input_fields(model.inputs, dataset.site.fields)
            else:
                check_model_inputs(model.inputs, self.artifacts.path(dataset.artifact_sha))
        except InvalidInputError as exc:
            raise IncompatibleChainError(
                f"model {model.name} and dataset {dataset.name} do not match: {exc.message}",
                {"model": model.name, "dataset": dataset.name, **(exc.details or {})}) from None
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            # A stored dataset that cannot be read fails in the steps that read it, which
            # report the error the way every step error is reported.
            log.warning("dataset %s: its arrays could not be read for the input check",
                        dataset.id)

    # execution ----------------------------------------------------------------------------

    def execute_many(self, run_ids: list[str], on_event: EventCallback | None = None) -> list[Run]:
        """Execute several runs at once (``workers`` at a time)."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda rid: self.execute(rid, on_event), run_ids))

    def cancel(self, run_id: str) -> None:
        with self._lock:
            self._cancelled.add(run_id)
            active = self._active.get(run_id)
        if active is not None:
            active[0].cancel(active[1])

    def recover_expired(self) -> list[str]:
        """Mark failed the runs left ``running`` by a process that stopped (their lease
        expired, or they have none); a rerun resumes them. Runs whose owner still renews its
        lease are left alone. Each is taken with its lease first, so when several processes
        recover at once each run is recovered once. Returns the recovered ids."""
        recovered = []
        for run_id in self.meta.expired_running_runs(_now()):
            with self._lock:
                if run_id in self._busy:
                    continue
                self._busy.add(run_id)
            try:
                if not self.meta.acquire_lease(run_id, self.owner, self.lease_ttl_s,
                                               status_from={RunStatus.running}):
                    continue  # renewed by its owner, or recovered by another process
                run = self.meta.get_run(run_id)
                for step in run.steps:
                    if step.status in {StepStatus.running, StepStatus.pending}:
                        running = step.status is StepStatus.running
                        self.meta.update_step(
                            run_id, step.index,
                            status=StepStatus.failed if running else StepStatus.skipped,
                            error="interrupted" if running else None)
                if self.meta.release_lease(run_id, self.owner, status=RunStatus.failed,
                                           finished_at=_now(), error=INTERRUPTED):
                    recovered.append(run_id)
            finally:
                with self._lock:
                    self._busy.discard(run_id)
        return recovered

    def execute(self, run_id: str, on_event: EventCallback | None = None, *,
                only_from: Collection[RunStatus] | None = None) -> Run:
        """Run every step of ``run_id`` (cache hits skip work), then evaluate.

        With ``only_from``, only a run still in one of those statuses is taken (or a
        ``running`` one whose lease expired): a server process that queued a pending run
        does not execute it again after another process has.

        Raises:
            ConflictError: another process (or this one) is executing the run, or it is
                no longer in ``only_from``; nothing about the run is changed.
        """
        emit = on_event or (lambda event: None)
        run = self.meta.get_run(run_id)
        model = self.meta.get_model(run.model_id)
        dataset = self.meta.get_dataset(run.dataset_id) if run.dataset_id else None
        self._take_lease(run_id, only_from)
        try:
            if run.site is not None:
                with self._lock:
                    self._sites[run_id] = run.site
            return self._execute(run, model, dataset, emit)
        finally:
            with self._lock:
                self._busy.discard(run_id)
                self._sites.pop(run_id, None)
                held = run_id in self._leased  # the outcome was not recorded (see _end)
                self._leased.discard(run_id)
            try:
                if held:
                    self.meta.release_lease(run_id, self.owner)
            except Exception:
                log.exception("the lease of run %s could not be released; it expires "
                              "in %.0f s", run_id, self.lease_ttl_s)

    # leases -------------------------------------------------------------------------------

    def _take_lease(self, run_id: str,
                    only_from: Collection[RunStatus] | None = None) -> None:
        busy = ConflictError(f"run {run_id} is being executed already, by a process that "
                             "holds its lease; wait for it to finish (or, if that process "
                             "stopped, for its lease to expire)", {"run": run_id})
        with self._lock:
            if run_id in self._busy:
                raise busy
            self._busy.add(run_id)
        taken = False
        try:
            taken = self.meta.acquire_lease(
                run_id, self.owner, self.lease_ttl_s,
                status_from=None if only_from is None else {*only_from, RunStatus.running},
                status=RunStatus.running, started_at=_now(), error=None)
        finally:
            with self._lock:
                if not taken:
                    self._busy.discard(run_id)
                else:
                    self._leased.add(run_id)
                    if self._heartbeat is None:
                        self._heartbeat = threading.Thread(
                            target=self._renew_leases, name="tinymlaas-lease-heartbeat",
                            daemon=True)
                        self._heartbeat.start()
        if not taken:
            raise busy

    def _renew_leases(self) -> None:
        """The heartbeat: renew the leases of the runs this engine executes every third of
        their life; stops when there are none (the next run starts it again). A run whose
        lease was taken over (this process stalled past its expiry) is stopped here."""
        interval = self.lease_ttl_s / 3
        stopped: set[str] = set()
        while True:
            with self._lock:
                if not self._leased:
                    self._heartbeat = None
                    return
            time.sleep(interval)
            with self._lock:
                ids = set(self._leased)
            if not ids:
                continue
            try:
                held = set(self.meta.renew_leases(self.owner, ids, self.lease_ttl_s))
            except Exception:
                log.exception("run leases could not be renewed; retrying in %.1f s", interval)
                continue
            with self._lock:
                lost = (ids - held - stopped) & self._leased
                stopped &= self._leased
            stopped |= lost
            for run_id in lost:
                log.warning("run %s was taken over by another process (its lease expired); "
                            "stopping it here", run_id)
                self.cancel(run_id)

    def _end(self, run_id: str, **fields: Any) -> None:
        """Record the run's outcome and release its lease in one update, only while this
        engine still holds the lease."""
        released = self.meta.release_lease(run_id, self.owner, **fields)
        with self._lock:  # given up either way: not renewed again, nor released in execute
            self._leased.discard(run_id)
        if not released:
            log.warning("run %s: outcome %s not recorded: another process took the run over",
                        run_id, fields.get("status"))

    def _execute(self, run: Run, model: Model, dataset: Dataset | None,
                 emit: EventCallback) -> Run:
        run_id = run.id
        try:
            current = self.meta.get_artifact(model.artifact_sha)
            made: list[tuple[Artifact, PlannedStep | None]] = [(current, None)]
            device = self._device(run)
            planned = self.plan(run.pipeline, model.kind, has_dataset=dataset is not None,
                                device=device)
            for step, plan in zip(run.steps, planned, strict=True):
                if run_id in self._cancelled:
                    return self._finish_cancelled(run, step.index)
                produced = self._run_step(run, step, plan, current, model, dataset, device,
                                          emit)
                if produced is None:
                    return self._finish_failed(run, step.index)
                current = produced
                made.append((current, plan))
            evaluated = next(((a, p) for a, p in reversed(made) if a.kind in EVALUABLE_KINDS),
                             (None, None))
            result = self._evaluate_run(run, model, dataset, evaluated[0], evaluated[1],
                                        planned, device, emit)
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self._end(run_id, status=RunStatus.failed, error=message, finished_at=_now())
            emit(RunEvent(run_id, "run", RunStatus.failed.value, message=message))
            return self.meta.get_run(run_id)
        finally:
            with self._lock:
                self._cancelled.discard(run_id)
        verdict = fidelity_verdict(dataset.task, result["baseline"], result["result"],
                                   run.pipeline.fidelity) \
            if dataset is not None and result["result"] else None
        if verdict is not None:  # the artifacts are kept: the user decides
            message = f"degraded: {verdict.message}"
            result["result"] = {**result["result"], "fidelity": verdict.as_dict()}
            self._end(run_id, status=RunStatus.degraded, output_sha=current.sha256,
                      error=message, finished_at=_now(), **result)
            emit(RunEvent(run_id, "run", RunStatus.degraded.value, 1.0, message=message))
            return self.meta.get_run(run_id)
        self._end(run_id, status=RunStatus.succeeded, output_sha=current.sha256,
                  finished_at=_now(), **result)
        emit(RunEvent(run_id, "run", RunStatus.succeeded.value, 1.0))
        return self.meta.get_run(run_id)

    # steps --------------------------------------------------------------------------------

    @staticmethod
    def _ref(artifact: Artifact) -> ArtifactRef:
        return ArtifactRef(sha256=artifact.sha256, kind=artifact.kind.value,
                           size=artifact.size_bytes, name=artifact.filename)

    def _dataset_ref(self, dataset: Dataset) -> DatasetRef:
        at_site = dataset.site
        return DatasetRef(artifact=self._ref(self.meta.get_artifact(dataset.artifact_sha)),
                          task=dataset.task.value, splits=dataset.splits.model_dump(),
                          num_classes=dataset.num_classes,
                          site=None if at_site is None else SiteData(
                              path=at_site.path, task=at_site.task,
                              label_column=at_site.label_column,
                              image_size=at_site.image_size))

    def _dispatch(self, run_id: str, job: TransformJob | EvaluateJob,
                  progress: Callable[[float, str], None]) -> JobResult:
        executor = self._executor_of(run_id)
        handle = executor.submit(job)
        with self._lock:
            self._active[run_id] = (executor, handle)
            cancelled = run_id in self._cancelled
        if cancelled:  # cancelled while the job was being submitted
            executor.cancel(handle)
        try:
            return executor.wait(handle, lambda e: progress(e.fraction, e.message))
        finally:
            with self._lock:
                self._active.pop(run_id, None)

    def _executor_of(self, run_id: str) -> Executor:
        """This engine's executor, or for a run made with a site, that site's."""
        with self._lock:
            site = self._sites.get(run_id)
        if site is None:
            return self.executor
        if self.site_executor is None:
            raise InvalidInputError(f"run {run_id} runs at a site, and this server has no "
                                    "broker to reach the site's workers: set "
                                    "TINYMLAAS_BROKER_URL (or serve --broker URL)")
        return self.site_executor(site, run_id)

    def _device(self, run: Run) -> Device | None:
        """The run's target device profile, if it has one."""
        return self.devices(run.device, run.project) if run.device and self.devices else None

    def _step_extras(self, run: Run, plan: PlannedStep,
                     device: Device | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """What a step gets beyond its params (the device, the project's key directory), and
        what of it keys the cache (the device's spec, the signing key's fingerprint)."""
        transformer = get_transformer(plan.transformer)
        job: dict[str, Any] = {}
        keyed: dict[str, Any] = {}
        if transformer.uses_device and device is not None:
            job["device"] = device.model_dump(mode="json")
            keyed["@device"] = job["device"]
        if transformer.signs:
            from tinymlaas.installers.signing import ensure_key

            job["signs"] = True
            keyed["@signing_key"] = ensure_key(self.key_dir(run.project))
        return job, keyed

    def key_dir(self, project: str) -> Path:
        """The directory of ``project``'s signing keys (made by the first step that signs)."""
        if self.keys_root is None:
            raise InvalidInputError("this engine has no key directory, so nothing can be "
                                    "signed here")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", project):
            raise InvalidInputError(f"project id {project!r} cannot name a key directory")
        return self.keys_root / project

    def _step_key(self, run: Run, plan: PlannedStep, current: Artifact,
                  dataset: Dataset | None, device: Device | None,
                  ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The step's cache key, its params as JSON and what its job gets beyond them."""
        params = plan.params.model_dump(mode="json")
        dataset_sha = dataset.artifact_sha if dataset and plan.needs != "none" else None
        extras, keyed = self._step_extras(run, plan, device)
        key = step_key(current.sha256, plan.transformer, plan.version,
                       {**params, **_file_digests(params, plan.file_params), **keyed},
                       dataset_sha, run.project)
        return key, params, extras

    def _transform_job(self, run: Run, job_id: str, plan: PlannedStep,
                       params: dict[str, Any], current: Artifact, model: Model,
                       dataset: Dataset | None, extras: dict[str, Any]) -> TransformJob:
        return TransformJob(
            job_id=job_id, project=run.project, transformer=plan.transformer, params=params,
            input=self._ref(current), input_specs=[s.model_dump() for s in model.inputs],
            dataset=self._dataset_ref(dataset) if dataset and plan.needs != "none" else None,
            timeout_s=plan.spec.timeout_s, memory_mb=plan.spec.memory_mb, **extras)

    def _run_step(self, run: Run, step: StepRecord, plan: PlannedStep, current: Artifact,
                  model: Model, dataset: Dataset | None, device: Device | None,
                  emit: EventCallback) -> Artifact | None:
        key, params, extras = self._step_key(run, plan, current, dataset, device)
        cached = self.meta.cached_step(key)
        if cached is not None and self.artifacts.exists(cached[0]):
            self.meta.update_step(run.id, step.index, status=StepStatus.cached, key=key,
                                  output_sha=cached[0], progress=1.0, metrics=cached[1],
                                  message="cached", error=None, duration_s=0.0)
            emit(RunEvent(run.id, step.index, StepStatus.cached.value, 1.0, "cached"))
            return self.meta.get_artifact(cached[0])

        started = _now()
        self.meta.update_step(run.id, step.index, status=StepStatus.running, key=key,
                              started_at=started, progress=0.0, message="starting", error=None)
        emit(RunEvent(run.id, step.index, StepStatus.running.value, 0.0, "starting"))
        job = self._transform_job(run, f"{run.id}-{step.index}-{key[:12]}", plan, params,
                                  current, model, dataset, extras)

        def progress(fraction: float, message: str) -> None:
            emit(RunEvent(run.id, step.index, StepStatus.running.value, fraction, message))

        result = self._dispatch(run.id, job, progress)
        finished = _now()
        timing = {"started_at": started, "finished_at": finished,
                  "duration_s": (finished - started).total_seconds(), "log": result.log}
        if not result.ok or result.output is None:
            status = StepStatus.cancelled if result.error_type == "Cancelled" \
                else StepStatus.failed
            self.meta.update_step(run.id, step.index, status=status, error=result.error,
                                  message=result.error, **timing)
            emit(RunEvent(run.id, step.index, status.value, message=result.error))
            return None
        output = self._record_output(result.output, [current.sha256], key)
        metrics = result.metrics
        self.meta.cache_step(key, output.sha256, plan.transformer, metrics)
        self.meta.update_step(run.id, step.index, status=StepStatus.succeeded,
                              output_sha=output.sha256, progress=1.0, message="done",
                              metrics=metrics, **timing)
        emit(RunEvent(run.id, step.index, StepStatus.succeeded.value, 1.0, "done"))
        return output

    def _record_output(self, ref: ArtifactRef, parents: list[str], key: str | None) -> Artifact:
        """The metadata of an output the executor stored."""
        kind = ArtifactKind(ref.kind)
        return self.meta.add_artifact(Artifact(
            sha256=ref.sha256, kind=kind, size_bytes=ref.size or 0,
            filename=FILE_NAMES.get(kind, ref.name or "file.bin"), parents=parents,
            step_key=key))

    # evaluation ---------------------------------------------------------------------------

    def evaluate(self, run_id: str, artifact: Artifact, model: Model, dataset: Dataset,
                 reference_sha: str | None, stage: str, emit: EventCallback,
                 device: Device | None = None, split: str = "test") -> dict[str, Any]:
        """Metrics of ``artifact`` on the test split, or one of its halves (cached by
        content within the dataset's project, like steps), as a dict."""
        device_spec = device.model_dump(mode="json") if device else None
        parts: list[Any] = [EVALUATION_VERSION, artifact.sha256, dataset.artifact_sha,
                            dataset.splits.model_dump(), dataset.task.value, reference_sha,
                            device_spec, dataset.project]
        if split != "test":  # the whole test split keeps the keys it always had
            parts.append(split)
        key = hashlib.sha256(canonical_json(parts).encode()).hexdigest()
        cached = self.meta.get_evaluation(key)
        if cached is not None and self.artifacts.exists(cached.metrics.get("outputs_sha", "")):
            emit(RunEvent(run_id, stage, StepStatus.cached.value, 1.0, "cached"))
            return cached.metrics
        emit(RunEvent(run_id, stage, StepStatus.running.value, 0.0, "starting"))
        job = EvaluateJob(
            job_id=f"{run_id}-{stage}-{key[:12]}", project=dataset.project,
            task=dataset.task.value, input=self._ref(artifact),
            input_specs=[s.model_dump() for s in model.inputs],
            dataset=self._dataset_ref(dataset), split=split, device=device_spec,
            reference=self._ref(self.meta.get_artifact(reference_sha)) if reference_sha
            else None)
        result = self._dispatch(run_id, job, lambda f, m: emit(
            RunEvent(run_id, stage, StepStatus.running.value, f, m)))
        if not result.ok or result.output is None:
            emit(RunEvent(run_id, stage, StepStatus.failed.value, message=result.error))
            raise InvalidInputError(f"evaluation ({stage}) failed: {result.error}")
        outputs = self._record_output(result.output, [artifact.sha256], None)
        metrics = {**result.metrics, "outputs_sha": outputs.sha256}
        self.meta.add_evaluation(key, Evaluation(artifact_sha=artifact.sha256,
                                                 dataset_id=dataset.id,
                                                 reference_sha=reference_sha, metrics=metrics))
        emit(RunEvent(run_id, stage, StepStatus.succeeded.value, 1.0, "done"))
        return metrics

    def _evaluate_run(self, run: Run, model: Model, dataset: Dataset | None,
                      output: Artifact | None, producer: PlannedStep | None,
                      planned: list[PlannedStep], device: Device | None,
                      emit: EventCallback) -> dict[str, Any]:
        if not run.pipeline.evaluate or output is None or dataset is None:
            return {"baseline": {}, "result": {}}
        baseline_artifact, note = self._baseline_artifact(run, model, dataset, output, producer,
                                                          planned, device, emit)
        split = run.pipeline.evaluation_split
        baseline = self.evaluate(run.id, baseline_artifact, model, dataset, None,
                                 "evaluate-baseline", emit, device, split)
        if note:
            baseline = {**baseline, "note": note}
        result = self.evaluate(run.id, output, model, dataset, baseline["outputs_sha"],
                               "evaluate", emit, device, split)
        return {"baseline": baseline, "result": result}

    def _baseline_artifact(self, run: Run, model: Model, dataset: Dataset, output: Artifact,
                           producer: PlannedStep | None, planned: list[PlannedStep],
                           device: Device | None, emit: EventCallback) -> tuple[Artifact, str]:
        """The float32 input model in the runtime that measures ``output``, so that no ratio
        compares two runtimes: an ONNX output against the input model's ONNX (a PyTorch
        input's ONNX export, made as the pipeline's ``export-onnx`` step makes it), generated
        C against the float32 ONNX compiled the same way. Where that cannot be made, the
        nearest model and a note on why (the comparison then shows no ratios).
        """
        source = self.meta.get_artifact(model.artifact_sha)
        if output.kind not in {ArtifactKind.onnx, ArtifactKind.c_source} or \
                output.kind is source.kind:
            return source, ""
        if source.kind is not ArtifactKind.onnx:
            export = next((p for p in planned if p.transformer == "export-onnx"), None)
            exported, why = self._derive(
                run, "export-onnx", export.params.model_dump(mode="json") if export else {},
                source, model, dataset, device, emit)
            if exported is None:
                return source, (f"the input model could not be exported to ONNX for a baseline "
                                f"in the output's runtime: {why}")
            source = exported
        if output.kind is ArtifactKind.c_source and producer is not None:
            if producer.input_kind is not ArtifactKind.onnx:
                return source, f"{producer.transformer} does not compile an ONNX model"
            compiled, why = self._derive(run, producer.transformer,
                                         producer.params.model_dump(mode="json"), source,
                                         model, dataset, device, emit)
            if compiled is None:
                return source, f"the float32 input model does not compile to C: {why}"
            return compiled, ""
        return source, ""

    def _derive(self, run: Run, name: str, params: dict[str, Any], current: Artifact,
                model: Model, dataset: Dataset, device: Device | None,
                emit: EventCallback) -> tuple[Artifact | None, str]:
        """``name`` applied to ``current`` outside the pipeline (for a baseline): from the
        step cache when the same step ran before, in this pipeline or another, else run now
        and cached. Returns the output, or ``None`` and why it failed."""
        transformer = get_transformer(name)
        validated = validate_params(name, params, "baseline ")
        plan = PlannedStep(PipelineStep(transformer=name, params=params), name,
                           transformer.version, validated, current.kind,
                           transformer.output_kind(current.kind, validated), transformer.needs,
                           transformer.file_params)
        key, params_json, extras = self._step_key(run, plan, current, dataset, device)
        cached = self.meta.cached_step(key)
        if cached is not None and self.artifacts.exists(cached[0]):
            return self.meta.get_artifact(cached[0]), ""
        stage = "evaluate-baseline"
        emit(RunEvent(run.id, stage, StepStatus.running.value, 0.0, f"{name} of the input model"))
        job = self._transform_job(run, f"{run.id}-baseline-{name}-{key[:12]}", plan,
                                  params_json, current, model, dataset, extras)
        result = self._dispatch(run.id, job, lambda f, m: emit(
            RunEvent(run.id, stage, StepStatus.running.value, f, m)))
        if not result.ok or result.output is None:
            if result.error_type == "Cancelled":
                raise InvalidInputError("evaluation (evaluate-baseline) cancelled")
            return None, result.error or "failed"
        output = self._record_output(result.output, [current.sha256], key)
        self.meta.cache_step(key, output.sha256, name, result.metrics)
        return output, ""

    # endings ------------------------------------------------------------------------------

    def _skip_rest(self, run: Run, after: int) -> None:
        for later in run.steps[after + 1:]:
            self.meta.update_step(run.id, later.index, status=StepStatus.skipped)

    def _finish_failed(self, run: Run, index: int) -> Run:
        self._skip_rest(run, index)
        failed = self.meta.get_run(run.id).steps[index]
        status = RunStatus.cancelled if failed.status is StepStatus.cancelled else RunStatus.failed
        message = f"step {index + 1} ({failed.transformer}) {failed.status.value}: {failed.error}"
        self._end(run.id, status=status, error=message, finished_at=_now())
        return self.meta.get_run(run.id)

    def _finish_cancelled(self, run: Run, index: int) -> Run:
        self.meta.update_step(run.id, index, status=StepStatus.cancelled)
        self._skip_rest(run, index)
        self._end(run.id, status=RunStatus.cancelled, error="cancelled", finished_at=_now())
        return self.meta.get_run(run.id)


def _file_digests(params: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """Content hashes of the files that params name, so an edited file is not a cache hit."""
    digests = {}
    for name in names:
        value = params.get(name)
        if value and Path(value).is_file():
            digests[f"{name}@sha256"] = sha256_file(Path(value))
    return digests
