"""The service facade every entry point uses."""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import yaml
from pydantic import BaseModel, Field

from tinymlaas.artifacts import LocalArtifactStore
from tinymlaas.config import Settings, get_settings
from tinymlaas.domain import (
    Artifact,
    ArtifactKind,
    Dataset,
    DatasetSplits,
    Device,
    Model,
    Pipeline,
    Project,
    Run,
    RunStatus,
    StepStatus,
    Task,
)
from tinymlaas.domain.entities import FILE_NAMES, INSTALLER_KINDS, PACKAGE_DIRECTORY_KINDS
from tinymlaas.domain.sites import SITE_SCHEME
from tinymlaas.engine import Engine, RunEvent
from tinymlaas.errors import ConflictError, InvalidInputError, NotFoundError
from tinymlaas.executors import LocalExecutor
from tinymlaas.executors.procs import private_dir
from tinymlaas.formats import datasets as ds
from tinymlaas.formats.archives import extract_package
from tinymlaas.formats.models import detect_model_kind, inspect_model, load_onnx_checked
from tinymlaas.formats.text_datasets import TextOptions
from tinymlaas.installers import read_manifest
from tinymlaas.service.compare import ComparisonRow, comparison_row, source_model_warnings
from tinymlaas.store import MetadataStore, cleanup
from tinymlaas.store.metadata import new_id

if TYPE_CHECKING:
    from tinymlaas.domain.sites import Site
    from tinymlaas.executors.celery import CeleryExecutor

__all__ = ["ComparisonRow", "Deletion", "PackageOutput", "Services", "SigningKey"]

DEFAULT_PROJECT = "default"


class Services:
    """Registers inputs, runs pipelines and compares results against the configured stores."""

    engine: Engine  # made after the executors, whose callbacks read it

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        private_dir(self.settings.home)  # 0700: out of reach of the sandbox user
        self.meta = MetadataStore(self.settings.resolved_database_url)
        self.artifacts = LocalArtifactStore(self.settings.resolved_artifacts_dir)
        self.executor = LocalExecutor(self.artifacts, self.settings.home / "work",
                                      self.settings.step_timeout_s, self.settings.step_memory_mb,
                                      sandbox_user=self.settings.sandbox_user,
                                      state_dir=self.settings.home / "procs",
                                      key_dir=lambda project: self.engine.key_dir(project))
        self.site_executor = self._site_executor()
        self.engine = Engine(self.meta, self.artifacts, self.executor,
                             workers=self.settings.workers,
                             lease_ttl_s=self.settings.lease_ttl_s,
                             keys_root=self.settings.home / "keys",
                             devices=lambda name, project: self.get_device(name, {project}),
                             site_executor=self.site_executor.for_site
                             if self.site_executor is not None else None)
        self.meta.ensure_project(DEFAULT_PROJECT, "Default project")

    def _site_executor(self) -> CeleryExecutor | None:
        """With a broker: the executor of the runs made with a site (their steps go to the
        site's queue). Without one, every step runs here."""
        if not self.settings.broker_url:
            return None
        from tinymlaas.executors.celery import CeleryExecutor
        from tinymlaas.store.attempts import AttemptStore

        return CeleryExecutor(self.settings.broker_url, AttemptStore(self.meta),
                              lease_ttl_s=self.settings.site_lease_ttl_s,
                              max_attempts=self.settings.site_attempts,
                              queue_timeout_s=self.settings.site_queue_timeout_s)

    def live_site(self, ref: str, project: str) -> Site:
        """Site ``ref`` of ``project``, which must be able to run steps now: this server has
        a broker and the site a live worker."""
        from tinymlaas.domain.sites import worker_alive
        from tinymlaas.store.sites import SiteStore

        site = SiteStore(self.meta).get_site(ref, {project})
        if self.site_executor is None:
            raise ConflictError("this server has no broker, so no step can run at a site: "
                                "start it with TINYMLAAS_BROKER_URL (or serve --broker URL)",
                                {"field": "site", "site": site.name})
        now = datetime.now(UTC)
        if not any(worker_alive(w, now) for w in site.workers):
            raise ConflictError(f"site {site.name!r} has no live worker; start one there "
                                f"with `tinymlaas worker --server URL --site {site.name} "
                                "--token SITE_TOKEN --data-root DIR`, then try again",
                                {"field": "site", "site": site.name})
        return site

    def close(self) -> None:
        if self.site_executor is not None:
            self.site_executor.close()
        self.meta.close()

    # artifacts ----------------------------------------------------------------------------

    def _store_file(self, path: Path, kind: ArtifactKind, filename: str) -> Artifact:
        sha, size = self.artifacts.put_file(path)
        return self.meta.add_artifact(Artifact(sha256=sha, kind=kind, size_bytes=size,
                                               filename=filename))

    # models -------------------------------------------------------------------------------

    def add_model(self, path: Path, name: str | None = None, *, task: Task = Task.classification,
                  project: str = DEFAULT_PROJECT, input_shape: list[int] | None = None,
                  description: str = "") -> Model:
        """Validate and register a model file. Nothing is stored when validation fails."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"model file {path} does not exist")
        kind = detect_model_kind(path)
        info = inspect_model(path, kind, self.settings.max_model_bytes, input_shape,
                             memory_mb=self.settings.step_memory_mb,
                             timeout_s=min(self.settings.step_timeout_s, 120))
        name = name or path.stem
        Model(id="m", name=name, artifact_sha="0" * 64, kind=kind)  # validates the name
        with tempfile.TemporaryDirectory() as tmp:
            source = path
            if kind is ArtifactKind.onnx:
                # One self-contained blob: external data (already checked) goes inline.
                model = load_onnx_checked(path, self.settings.max_model_bytes)
                if any(t.data_location == onnx.TensorProto.EXTERNAL
                       for t in model.graph.initializer) or _has_external(path):
                    source = Path(tmp) / "model.onnx"
                    onnx.save(model, str(source))
            artifact = self._store_file(source, kind, _model_filename(name, kind))
        return self.meta.add_model(Model(
            id=new_id("model"), name=name, project=project, artifact_sha=artifact.sha256,
            kind=kind, task=task, inputs=info.inputs, outputs=info.outputs,
            parameters=info.parameters, description=description))

    def add_hf_model(self, source: str, name: str | None = None, *,
                     revision: str | None = None, task: Task | None = None,
                     project: str = DEFAULT_PROJECT, description: str = "") -> Model:
        """Register a Hugging Face model: ``hf:ORG/NAME[@REV]`` (the Hub, or its cache when
        offline), a model folder (``save_pretrained``) or a cache folder
        (``models--ORG--NAME``). It is exported to ONNX with its tokenizer and config kept
        in the file; the task follows the architecture unless given.

        Raises:
            ServiceUnavailableError: the Hub cannot be reached and the repo is not cached.
            NotFoundError: the Hub has no such repo or revision.
            UnsafeInputError: the weights are only pickles.
            UnsupportedModelError: remote code needed, not a text model, or export failure.
        """
        from tinymlaas.formats import huggingface as hf
        from tinymlaas.formats.hub import hub_snapshot, parse_repo_ref

        max_bytes = self.settings.max_model_bytes
        if source.startswith("hf:"):
            repo_id, pinned = parse_repo_ref(source)
            revision = revision or pinned
            folder = hub_snapshot(repo_id, revision=revision, max_bytes=max_bytes)
            label = f"hf:{repo_id}@{folder.name}"
            default_name = repo_id.rsplit("/", 1)[-1]
        else:
            path = Path(source)
            if not hf.is_model_folder(path):
                raise InvalidInputError(f"{source} is neither hf:ORG/NAME nor a Hugging Face "
                                        "model folder (config.json, model.safetensors, "
                                        "tokenizer files)")
            folder = hf.resolve_model_folder(path, revision)
            label = str(path.resolve().name)
            default_name = label.split("--")[-1] if label.startswith("models--") else label
        name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", default_name).strip("-._")[:100] \
            or "model"
        Model(id="m", name=name, artifact_sha="0" * 64, kind=ArtifactKind.onnx)  # the name
        with tempfile.TemporaryDirectory() as tmp:
            exported = hf.export_model_folder(folder, Path(tmp) / "model.onnx", source=label,
                                              max_bytes=max_bytes)
            note = " (tokenizer and config kept in the ONNX metadata)" \
                if exported.has_tokenizer else ""
            return self.add_model(exported.path, name, task=task or exported.task,
                                  project=project,
                                  description=description or
                                  f"{label}: {exported.architecture}{note}")

    def get_model(self, ref: str, project: str | None = None) -> Model:
        return self.meta.get_model(ref, project)

    def list_models(self, project: str | None = None) -> list[Model]:
        return self.meta.list_models(project)

    # datasets -----------------------------------------------------------------------------

    def add_dataset(self, source: str, name: str | None = None, *, task: Task | None = None,
                    label_column: str | None = None, image_size: tuple[int, int] | None = None,
                    splits: DatasetSplits | None = None,
                    project: str = DEFAULT_PROJECT, text: TextOptions | None = None) -> Dataset:
        """Register a dataset file, or a built-in by name (``digits``). With ``text``, a
        CSV/JSONL of text tokenized with the tokenizer of the model ``text.tokenizer``. A
        ``site://NAME/path`` file stays at site NAME (:mod:`.site_datasets`)."""
        s = self.settings
        if source.startswith(SITE_SCHEME):
            from tinymlaas.service.site_datasets import add_site_dataset

            if text is not None:
                raise InvalidInputError("text at a site cannot be tokenized there yet: "
                                        "tokenize it into an NPZ (one array per model input) "
                                        "and register that", {"field": "tokenizer"})
            return add_site_dataset(self, source, name, task=task, label_column=label_column,
                                    image_size=image_size, splits=splits or DatasetSplits(),
                                    project=project)
        if text is not None:
            path = Path(source)
            if not path.is_file():
                raise InvalidInputError(f"dataset file {source!r} does not exist")
            data = self._tokenize(path, text, project, label_column=label_column, task=task)
            default_name = path.stem
        elif source in ds.BUILTIN_DATASETS and not Path(source).exists():
            data = ds.load_builtin(source)
            default_name = source
        else:
            path = Path(source)
            if not path.is_file():
                raise InvalidInputError(
                    f"dataset {source!r} is neither a file nor a built-in "
                    f"({', '.join(ds.BUILTIN_DATASETS)})")
            data = ds.load_dataset_file(path, task=task, label_column=label_column,
                                        image_size=image_size, max_bytes=s.max_dataset_bytes,
                                        max_entries=s.max_archive_entries,
                                        max_ratio=s.max_archive_ratio,
                                        max_classes=s.max_classes)
            default_name = path.stem
        if task is not None:
            data.task = task
        name = name or default_name
        splits = splits or DatasetSplits()
        record = Dataset(id=new_id("data"), name=name, project=project, artifact_sha="0" * 64,
                         source_format=data.source_format, task=data.task,
                         num_samples=len(data.X), feature_shape=list(data.X.shape[1:]),
                         num_classes=data.num_classes, class_names=data.class_names,
                         splits=splits)
        with tempfile.TemporaryDirectory() as tmp:
            canonical = ds.write_canonical(data, Path(tmp) / "dataset.npz")
            artifact = self._store_file(canonical, ArtifactKind.dataset_npz, f"{name}.npz")
        record.artifact_sha = artifact.sha256
        return self.meta.add_dataset(record)

    def _tokenize(self, path: Path, text: TextOptions, project: str, *,
                  label_column: str | None, task: Task | None) -> ds.LoadedDataset:
        """A text file tokenized with the tokenizer kept in a registered model."""
        from tinymlaas.formats.huggingface import model_tokenizer
        from tinymlaas.formats.text_datasets import tokenize_text_file

        try:
            model = self.get_model(text.tokenizer, project)
        except NotFoundError:  # an id, or a model of another project
            model = self.get_model(text.tokenizer)
        if model.kind is not ArtifactKind.onnx:
            raise InvalidInputError(f"model {model.name!r} is {model.kind}; a tokenizer comes "
                                    "with a model imported from Hugging Face (ONNX)")
        tokenizer = model_tokenizer(self.artifact_path(model.artifact_sha))
        return tokenize_text_file(path, tokenizer, [spec.name for spec in model.inputs], text,
                                  label_column=label_column, task=task,
                                  max_bytes=self.settings.max_dataset_bytes,
                                  max_classes=self.settings.max_classes)

    def get_dataset(self, ref: str, project: str | None = None) -> Dataset:
        return self.meta.get_dataset(ref, project)

    def list_datasets(self, project: str | None = None) -> list[Dataset]:
        return self.meta.list_datasets(project)

    # devices ------------------------------------------------------------------------------

    def list_devices(self, projects: Collection[str] | None = None) -> list[Device]:
        """The catalog and the custom devices (of ``projects`` when given)."""
        from tinymlaas.devices.catalog import load_catalog

        return [*load_catalog(), *self.meta.list_custom_devices(projects)]

    def get_device(self, name: str, projects: Collection[str] | None = None) -> Device:
        """A catalog device, or a custom one of ``projects`` (any project when not given)."""
        known = self.list_devices(projects)
        for device in known:
            if device.name == name:
                return device
        raise NotFoundError(f"unknown device {name!r}; `tinymlaas devices list` shows the "
                            "catalog", {"known": [d.name for d in known]})

    def add_device(self, device: Device) -> Device:
        """Register a custom device in its project; catalog names are taken."""
        from tinymlaas.devices.catalog import load_catalog

        if any(d.name == device.name for d in load_catalog()):
            raise ConflictError(f"{device.name!r} is a catalog device; pick another name")
        return self.meta.add_device(device)

    def analyze(self, ref: str, device: str | None = None, runtime: str = "c",
                layers: bool = False, instructions: bool = False):
        """Static analysis of an ONNX file, a registered ONNX model or a run's ONNX output."""
        from tinymlaas.devices.analysis import analyze_model

        path = Path(ref)
        label = ref
        if not path.is_file():
            try:
                model = self.meta.get_model(ref)
                sha, kind = model.artifact_sha, model.kind
            except NotFoundError:
                run = self.meta.get_run(ref)
                if run.output_sha is None:
                    raise InvalidInputError(f"run {run.id} has no output yet") from None
                sha = run.output_sha
                kind = self.meta.get_artifact(sha).kind
            if kind is not ArtifactKind.onnx:
                raise InvalidInputError(f"{ref} is {kind}; static analysis reads ONNX (run "
                                        "export-onnx first)")
            path = self.artifacts.path(sha)
        else:
            load_onnx_checked(path, self.settings.max_model_bytes)
        analysis = analyze_model(path, self.get_device(device) if device else None,
                                 runtime=runtime, layers=layers, instructions=instructions)
        analysis.model = label
        return analysis

    def run_layers(self, run: Run) -> list[Any] | None:
        """The compiler's per-layer profile (:mod:`tinymlaas.compiler.profile`) of a run whose
        output is an ONNX model or generated C: the latest ONNX model of the run (its output,
        or what its ``compile-c`` step compiled, with that step's options). None when there
        is no such model or the compiler cannot lower it."""
        kinds = {ArtifactKind.onnx, ArtifactKind.c_source, ArtifactKind.c_bundle}
        if run.output_sha is None or self.meta.get_artifact(run.output_sha).kind not in kinds:
            return None
        source = self.meta.get_model(run.model_id).artifact_sha
        options: dict[str, Any] = {}
        for step in run.steps:
            if step.output_sha is None:
                break
            if step.transformer == "compile-c":
                options = {k: v for k, v in step.params.items()
                           if k in ("simplify", "fuse_residual", "io")}
            elif self.meta.get_artifact(step.output_sha).kind is ArtifactKind.onnx:
                source, options = step.output_sha, {}
        if self.meta.get_artifact(source).kind is not ArtifactKind.onnx:
            return None
        return _profile(str(self.artifacts.path(source)), tuple(sorted(options.items())))

    # runs ---------------------------------------------------------------------------------

    def create_run(self, pipeline: Pipeline, *, model: str | None = None,
                   dataset: str | None = None, device: str | None = None,
                   name: str | None = None, project: str | None = None,
                   site: str | None = None) -> Run:
        """Validate a pipeline against its inputs and record a pending run (``site``: a
        site of the run's project whose workers run its steps)."""
        model_ref = model or pipeline.model
        dataset_ref = dataset or pipeline.dataset
        if not model_ref:
            raise InvalidInputError("a run needs a model: set 'model' in the pipeline file or "
                                    "pass --model", {"field": "model"})
        project = project or pipeline.project
        model_entity = self.meta.get_model(model_ref, project)
        dataset_entity = self.meta.get_dataset(dataset_ref, project) if dataset_ref else None
        device_name = device or pipeline.device
        if device_name:
            self.get_device(device_name, {model_entity.project})
        site_id = self.live_site(site, model_entity.project).id if site else None
        if dataset_entity is not None and dataset_entity.site is not None:
            if site_id is None:  # its steps run where its data is
                site_id = self.live_site(dataset_entity.site.site_id, model_entity.project).id
            elif site_id != dataset_entity.site.site_id:
                raise InvalidInputError(
                    f"dataset {dataset_entity.name!r} stays at {dataset_entity.location}, so "
                    "the run's steps run at that site; a run reads one site's data: leave "
                    "out --site (or give that site)", {"field": "site"})
        return self.engine.create_run(pipeline, model_entity, dataset_entity, device_name,
                                      name, project, site=site_id)

    def cancel_run(self, ref: str) -> Run:
        """Cancel a run in these stores. A run is executed by the process that started it,
        so only a pending run, or a running one whose process stopped (its lease expired), is
        marked cancelled here; one that a live process executes is left to that process."""
        run = self.get_run(ref)
        if run.status not in {RunStatus.pending, RunStatus.running}:
            raise ConflictError(f"run {run.id} is {run.status.value}; only a queued or "
                                "running run can be cancelled",
                                {"run": run.id, "status": run.status.value})
        engine, meta = self.engine, self.meta
        taken = meta.acquire_lease(run.id, engine.owner, engine.lease_ttl_s,
                                   status_from={RunStatus.pending, RunStatus.running},
                                   status=RunStatus.cancelled, error="cancelled",
                                   finished_at=datetime.now(UTC))
        if not taken:
            owner, _ = meta.run_lease(run.id)
            current = self.get_run(run.id)
            if current.status is RunStatus.running:
                raise ConflictError(
                    f"run {run.id} is being executed by another process ({owner}); stop it "
                    "there (Ctrl-C in its terminal), or, for a server's run, with `tinymlaas "
                    f"--server URL runs cancel {run.id}`", {"run": run.id, "owner": owner})
            raise ConflictError(f"run {run.id} is {current.status.value}; only a queued or "
                                "running run can be cancelled",
                                {"run": run.id, "status": current.status.value})
        try:
            stopped = False
            for step in run.steps:
                if step.status in {StepStatus.pending, StepStatus.running}:
                    meta.update_step(run.id, step.index, status=StepStatus.skipped if stopped
                                     else StepStatus.cancelled)
                    stopped = True
        finally:
            meta.release_lease(run.id, engine.owner)
        return self.get_run(run.id)

    def execute_run(self, run_id: str,
                    on_event: Callable[[RunEvent], None] | None = None, *,
                    only_from: Collection[RunStatus] | None = None) -> Run:
        return self.engine.execute(run_id, on_event, only_from=only_from)

    def execute_runs(self, run_ids: list[str],
                     on_event: Callable[[RunEvent], None] | None = None) -> list[Run]:
        return self.engine.execute_many(run_ids, on_event)

    def rerun(self, ref: str) -> Run:
        """A new run of the same pipeline and inputs (finished steps come from the cache)."""
        old = self.meta.get_run(ref)
        return self.engine.create_run(old.pipeline, self.meta.get_model(old.model_id),
                                      self.meta.get_dataset(old.dataset_id)
                                      if old.dataset_id else None, old.device,
                                      old.name, old.project, site=old.site)

    def list_projects(self) -> list[Project]:
        return self.meta.list_projects()

    # deleting -----------------------------------------------------------------------------

    def delete_run(self, ref: str, project: str | None = None) -> Deletion:
        """Delete a finished run; the artifacts only it used are freed."""
        run = self.meta.get_run(ref, project)
        return self._delete(runs=[run.id])

    def delete_model(self, ref: str, project: str | None = None, *,
                     force: bool = False) -> Deletion:
        """Delete a model; with ``force`` also the runs that start from it."""
        model = self.meta.get_model(ref, project)
        runs = [r.id for r in cleanup.runs_using(self.meta, model_id=model.id)] if force else []
        return self._delete(runs=runs, models=[model.id])

    def delete_dataset(self, ref: str, project: str | None = None, *,
                       force: bool = False) -> Deletion:
        """Delete a dataset; with ``force`` also the runs that use it."""
        dataset = self.meta.get_dataset(ref, project)
        runs = ([r.id for r in cleanup.runs_using(self.meta, dataset_id=dataset.id)]
                if force else [])
        return self._delete(runs=runs, datasets=[dataset.id])

    def delete_project(self, project: str) -> Deletion:
        """Delete a project with everything in it, its signing keys included."""
        if project not in {p.id for p in self.meta.list_projects()}:
            raise NotFoundError(f"project {project!r} not found", {"kind": "project"})
        if project == DEFAULT_PROJECT:
            raise ConflictError("the default project cannot be deleted; delete what is in it "
                                "instead", {"project": project})
        counts = Deletion(runs=[r.id for r in cleanup.runs_using(self.meta, project=project)],
                          models=[m.id for m in self.meta.list_models(project)],
                          datasets=[d.id for d in self.meta.list_datasets(project)])
        cleanup.delete_project(self.meta, project)
        if self.engine.keys_root is not None:
            shutil.rmtree(self.engine.key_dir(project), ignore_errors=True)
        return self._free(counts)

    def collect_garbage(self) -> Deletion:
        """Free the artifacts nothing refers to any more (see :mod:`tinymlaas.store.cleanup`)."""
        return self._free(Deletion())

    def _delete(self, runs: Collection[str] = (), models: Collection[str] = (),
                datasets: Collection[str] = ()) -> Deletion:
        cleanup.delete_records(self.meta, runs=runs, models=models, datasets=datasets)
        return self._free(Deletion(runs=list(runs), models=list(models),
                                   datasets=list(datasets)))

    def _free(self, deletion: Deletion) -> Deletion:
        freed = cleanup.collect_garbage(self.meta)
        size = sum(self.artifacts.delete(sha) for sha in freed)
        return deletion.model_copy(update={"freed_artifacts": len(freed), "freed_bytes": size})

    def get_run(self, ref: str, project: str | None = None) -> Run:
        return self.meta.get_run(ref, project)

    def list_runs(self, project: str | None = None, status: str | None = None) -> list[Run]:
        return self.meta.list_runs(project, status)

    def compare(self, refs: list[str], reference: str | None = None) -> list[ComparisonRow]:
        """Side-by-side metrics; ratios against ``reference``'s output, else each run's
        baseline (the float32 input model in the run's runtime), never across runtimes
        (see :mod:`tinymlaas.service.compare`)."""
        runs = [self.meta.get_run(r) for r in refs]
        ref_run = self.meta.get_run(reference) if reference else None
        models = {run.model_id: self.meta.get_model(run.model_id)
                  for run in [*runs, *([ref_run] if ref_run else [])]}
        warnings = source_model_warnings(list(models.values()))
        label = f"run {ref_run.name} ({ref_run.id})" if ref_run else "float32 input model"
        return [comparison_row(run, models[run.model_id],
                               ref_run.result if ref_run else run.baseline, label, warnings)
                for run in runs]

    def export_run(self, ref: str, out_dir: Path) -> list[Path]:
        """Write a finished run's model, metrics, pipeline and lineage into ``out_dir``."""
        run = self.meta.get_run(ref)
        # A degraded run's output is exported too: the user decides whether its fidelity is
        # enough (its metrics, written alongside, say why it is degraded).
        if run.status not in {RunStatus.succeeded, RunStatus.degraded} or \
                run.output_sha is None:
            raise InvalidInputError(f"run {run.id} is {run.status.value}; only a succeeded "
                                    "(or degraded) run has an output to export")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        import re

        # An export leaves this machine: a path on it (a step's file parameter such as
        # distill's student, a path in a message) is reduced to its file name.
        absolute = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"/:,;()\[\]{}<>|]+/)+"
                              r"([^\s'\"/:,;()\[\]{}<>|]*)")

        def relative(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: relative(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [relative(v) for v in value]
            if isinstance(value, Path) or (isinstance(value, str) and value.startswith("/")
                                           and "\n" not in value and Path(value).name):
                return Path(value).name
            if isinstance(value, str):
                return absolute.sub(lambda m: m.group(1) or ".", value)
            return value

        output = self.named_artifacts(run, [run.output_sha])[0]
        written = [self.artifacts.export(output.sha256, out_dir / output.filename)]
        if output.kind in PACKAGE_DIRECTORY_KINDS:  # ready to build: `cd <dir> && make`
            written.append(extract_package(written[0], out_dir / Path(output.filename).stem))
        metrics = {"run": run.id, "name": run.name, "baseline": run.baseline,
                   "result": run.result,
                   "steps": [s.model_dump(mode="json", exclude={"log"}) for s in run.steps]}
        for name, content in (
            ("metrics.json", json.dumps(relative(metrics), indent=2, default=str)),
            ("pipeline.yaml", yaml.safe_dump(relative(run.pipeline.model_dump(mode="json")),
                                             sort_keys=False)),
            ("lineage.json", json.dumps(relative(self.lineage(run)), indent=2, default=str)),
        ):
            target = out_dir / name
            target.write_text(content)
            written.append(target)
        return written

    def lineage(self, run: Run) -> list[dict[str, Any]]:
        """The chain of artifacts that led to ``run``'s output, newest first (named as in
        :meth:`named_artifacts`)."""
        shas: list[str] = []
        current = run.output_sha
        while current and current not in shas:
            try:
                parents = self.meta.get_artifact(current).parents
            except NotFoundError:  # an ancestor that a deleted run alone had used
                break
            shas.append(current)
            current = parents[0] if parents else None
        return [a.model_dump(mode="json") for a in self.named_artifacts(run, shas)]

    def named_artifacts(self, run: Run, shas: list[str]) -> list[Artifact]:
        """``run``'s artifacts ``shas`` as its people see them.

        Identical content is stored once, so a blob keeps the file name and time of whoever
        stored it first, perhaps another user. Here the run's input is named after the run's
        own model and dated at its registration; the rest go by their kind's file name and
        the time the step of this run that made them finished.
        """
        model = self.meta.get_model(run.model_id)
        finished = {s.output_sha: s.finished_at for s in run.steps if s.output_sha}
        named = []
        for sha in shas:
            artifact = self.meta.get_artifact(sha)
            if sha == model.artifact_sha:
                name, when = _model_filename(model.name, model.kind), model.created_at
            else:  # kinds without a fixed name (a wheel) keep the one their step gave
                name = FILE_NAMES.get(artifact.kind, artifact.filename)
                when = finished.get(sha) or run.created_at
            named.append(artifact.model_copy(update={"filename": name, "created_at": when}))
        return named

    def signing_key(self, project: str | None = None, *, rotate: bool = False) -> SigningKey:
        """``project``'s signing key (made now if it has none), or a new one with ``rotate``;
        only its public half leaves the key directory."""
        from tinymlaas.installers import signing

        project = project or DEFAULT_PROJECT
        if project not in {p.id for p in self.meta.list_projects()}:
            raise NotFoundError(f"project {project!r} not found", {"kind": "project"})
        key_dir = self.engine.key_dir(project)
        signing.ensure_key(key_dir)
        if rotate:
            signing.rotate_key(key_dir)
        pem = signing.public_key_pem(key_dir)
        return SigningKey(project=project, fingerprint=signing.fingerprint(pem),
                          public_key_pem=pem.decode("ascii"),
                          retired=list(signing.retired_public_keys(key_dir)))

    def run_packages(self, run: Run) -> list[PackageOutput]:
        """The installer outputs of ``run``'s steps, with their manifests."""
        outputs = []
        for step in run.steps:
            if not step.output_sha:
                continue
            artifact = self.named_artifacts(run, [step.output_sha])[0]
            if artifact.kind in INSTALLER_KINDS:
                outputs.append(PackageOutput(
                    step=step.index + 1, transformer=step.transformer, artifact=artifact,
                    manifest=read_manifest(self.artifacts.path(artifact.sha256),
                                           artifact.kind)))
        return outputs

    def model_file(self, model: Model) -> tuple[Artifact, Path]:
        """A model's blob, named after the model (see :meth:`named_artifacts`)."""
        artifact = self.meta.get_artifact(model.artifact_sha).model_copy(update={
            "filename": _model_filename(model.name, model.kind), "created_at": model.created_at})
        return artifact, self.artifacts.path(model.artifact_sha)

    def dataset_file(self, dataset: Dataset) -> tuple[Artifact, Path]:
        """A dataset's canonical NPZ, named after the dataset."""
        artifact = self.meta.get_artifact(dataset.artifact_sha).model_copy(update={
            "filename": f"{dataset.name}.npz", "created_at": dataset.created_at})
        return artifact, self.dataset_path(dataset)

    def dataset_path(self, dataset: Dataset) -> Path:
        """Where this server reads a dataset's canonical NPZ.

        Raises:
            ConflictError: the dataset stays at a site; its bytes are not here.
        """
        if dataset.site is not None:
            raise ConflictError(f"dataset {dataset.name!r} stays at {dataset.location}: its "
                                "bytes never reach this server, so it cannot be read here "
                                "(runs on it run at its site)",
                                {"dataset": dataset.name, "location": dataset.location})
        return self.artifacts.path(dataset.artifact_sha)

    def artifact_path(self, sha: str) -> Path:
        return self.artifacts.path(sha)


class Deletion(BaseModel):
    """What a delete removed, and the storage it freed."""

    runs: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    datasets: list[str] = Field(default_factory=list)
    freed_artifacts: int = Field(default=0, description="artifacts nothing else used")
    freed_bytes: int = 0


class SigningKey(BaseModel):
    """The public half of a project's image signing key."""

    project: str
    fingerprint: str = Field(description="sha256 of the public key (DER), as MCUboot's "
                             "KEYHASH")
    public_key_pem: str = Field(description="Compile into the bootloader (imgtool getpub)")
    retired: list[str] = Field(description="Fingerprints of keys rotated out")


class PackageOutput(BaseModel):
    """An installer's output in a run: what to download, and what its manifest says."""

    step: int = Field(description="1-based index of the step that made it")
    transformer: str
    artifact: Artifact
    manifest: dict[str, Any] | None = Field(description="manifest.json of a directory "
                                            "package, the core metadata of a wheel")



def _model_filename(name: str, kind: ArtifactKind) -> str:
    return f"{name}{Path(FILE_NAMES[kind]).suffix}"


def _has_external(path: Path) -> bool:
    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@functools.lru_cache(maxsize=32)
def _profile(path: str, options: tuple[tuple[str, Any], ...]) -> list[Any] | None:
    """Per-layer rows of a stored (content-addressed, so never changing) ONNX file."""
    import logging

    from tinymlaas.compiler.profile import profile_model
    from tinymlaas.errors import TinymlaasError

    try:
        return profile_model(path, **dict(options))
    except TinymlaasError:
        return None  # operators the compiler lacks
    except Exception:  # a chart is not worth a failing run page
        logging.getLogger(__name__).warning("no per-layer profile of %s", path, exc_info=True)
        return None
