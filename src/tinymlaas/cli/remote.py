"""The CLI against a server: the same methods as :class:`~tinymlaas.service.Services`
(those the CLI calls), returning the same domain entities, implemented with
:class:`tinymlaas.Client`. ``tinymlaas --server URL --token T ...`` picks it.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinymlaas.client import Client
from tinymlaas.domain import (
    ArtifactKind,
    Dataset,
    DatasetSplits,
    Device,
    Model,
    Pipeline,
    Project,
    Run,
    Task,
)
from tinymlaas.domain.entities import FILE_NAMES, PACKAGE_DIRECTORY_KINDS
from tinymlaas.domain.sites import SITE_SCHEME
from tinymlaas.engine import RunEvent
from tinymlaas.errors import ConflictError, InvalidInputError, NotFoundError
from tinymlaas.formats.archives import extract_package
from tinymlaas.formats.datasets import BUILTIN_DATASETS
from tinymlaas.formats.text_datasets import TextOptions
from tinymlaas.service import ComparisonRow
from tinymlaas.service.services import Deletion, SigningKey

__all__ = ["RemoteServices"]


def _run(public: Any) -> Run:
    return Run.model_validate(public.model_dump())


class RemoteServices:
    """A stand-in for the local ``Services`` that talks to a tinymlaas server.

    Args:
        url: The server, e.g. ``http://127.0.0.1:8000``.
        token: An API token (``POST /api/v1/users/me/tokens``) or log-in token.
    """

    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            raise InvalidInputError("a server needs a token: pass --token or set "
                                    "TINYMLAAS_TOKEN (create one with POST "
                                    "/api/v1/users/me/tokens)")
        self.client = Client(url, token)

    def close(self) -> None:
        self.client.close()

    # models and datasets ------------------------------------------------------------------

    def add_model(self, path: Path, name: str | None = None, *,
                  task: Task = Task.classification, project: str | None = None,
                  input_shape: list[int] | None = None, description: str = "") -> Model:
        project = None if project == "default" else project
        public = self.client.upload_model(path, name=name, project=project, task=task.value,
                                          input_shape=input_shape, description=description)
        return Model.model_validate(public.model_dump())

    def add_hf_model(self, source: str, name: str | None = None, *,
                     revision: str | None = None, task: Task | None = None,
                     project: str | None = None, description: str = "") -> Model:
        """``hf:ORG/NAME`` is imported by the server; a local folder is exported here and
        the ONNX file (tokenizer inside) uploaded."""
        project = None if project == "default" else project
        if source.startswith("hf:"):
            from tinymlaas.formats.hub import parse_repo_ref

            repo_id, pinned = parse_repo_ref(source)
            public = self.client.import_model(repo_id, None, revision=revision or pinned,
                                              name=name, project=project,
                                              task=task.value if task else None,
                                              description=description)
            return Model.model_validate(public.model_dump())
        from tinymlaas.formats import huggingface as hf

        path = Path(source)
        if not hf.is_model_folder(path):
            raise InvalidInputError(f"{source} is neither hf:ORG/NAME nor a Hugging Face "
                                    "model folder")
        folder = hf.resolve_model_folder(path, revision)
        with tempfile.TemporaryDirectory() as tmp:
            exported = hf.export_model_folder(folder, Path(tmp) / f"{name or path.name}.onnx",
                                              source=path.resolve().name, max_bytes=2**40)
            public = self.client.upload_model(exported.path, name=name, project=project,
                                              task=(task or exported.task).value,
                                              description=description or
                                              f"{path.name}: {exported.architecture}")
        return Model.model_validate(public.model_dump())

    def list_models(self, project: str | None = None) -> list[Model]:
        return [Model.model_validate(m.model_dump()) for m in self.client.list_models(project)]

    def get_model(self, ref: str, project: str | None = None) -> Model:
        return Model.model_validate(self.client.get_model(ref).model_dump())

    def add_dataset(self, source: str, name: str | None = None, *, task: Task | None = None,
                    label_column: str | None = None, image_size: tuple[int, int] | None = None,
                    splits: DatasetSplits | None = None,
                    project: str | None = None, text: TextOptions | None = None) -> Dataset:
        project = None if project == "default" else project
        splits = splits or DatasetSplits()
        if source.startswith(SITE_SCHEME):  # the CLI refuses text at a site
            public = self.client.add_site_dataset(
                source, name=name, project=project, task=task.value if task else None,
                label_column=label_column, image_size=image_size,
                test_fraction=splits.test_fraction, calibration_size=splits.calibration_size,
                seed=splits.seed)
        elif text is not None:
            public = self.client.upload_dataset(
                source, name=name, project=project, task=task.value if task else None,
                label_column=label_column, test_fraction=splits.test_fraction,
                calibration_size=splits.calibration_size, seed=splits.seed,
                tokenizer=text.tokenizer, text_column=text.text_column,
                text_pair_column=text.text_pair_column, max_length=text.max_length,
                padding=text.padding)
        elif source in BUILTIN_DATASETS and not Path(source).exists():
            public = self.client.add_builtin_dataset(
                source, name=name, project=project, test_fraction=splits.test_fraction,
                calibration_size=splits.calibration_size, seed=splits.seed)
        else:
            public = self.client.upload_dataset(
                source, name=name, project=project, task=task.value if task else None,
                label_column=label_column, image_size=image_size,
                test_fraction=splits.test_fraction, calibration_size=splits.calibration_size,
                seed=splits.seed)
        return Dataset.model_validate(public.model_dump())

    def list_datasets(self, project: str | None = None) -> list[Dataset]:
        return [Dataset.model_validate(d.model_dump())
                for d in self.client.list_datasets(project)]

    def get_dataset(self, ref: str, project: str | None = None) -> Dataset:
        return Dataset.model_validate(self.client.get_dataset(ref).model_dump())

    # devices ------------------------------------------------------------------------------

    def list_devices(self) -> list[Device]:
        return [Device.model_validate(d.model_dump()) for d in self.client.list_devices()]

    def get_device(self, name: str) -> Device:
        return Device.model_validate(self.client.get_device(name).model_dump())

    def add_device(self, device: Device) -> Device:
        spec = device.model_dump(mode="json", exclude={"custom"})
        return Device.model_validate(self.client.add_device(**spec).model_dump())

    # runs ---------------------------------------------------------------------------------

    def create_run(self, pipeline: Pipeline, *, model: str | None = None,
                   dataset: str | None = None, device: str | None = None,
                   name: str | None = None, project: str | None = None,
                   site: str | None = None) -> Run:
        """Create the run on the server (its steps at ``site``'s workers when given); it
        is queued there at once."""
        model, dataset = model or pipeline.model, dataset or pipeline.dataset
        if not model:
            raise InvalidInputError("a run needs a model: set 'model' in the pipeline file or "
                                    "pass --model", {"field": "model"})
        body = pipeline.model_dump(mode="json", exclude={"model", "dataset", "device",
                                                         "project"})
        return _run(self.client.create_run(model, dataset, pipeline=body,
                                           device=device or pipeline.device, name=name,
                                           project=project or pipeline.project, site=site))

    def execute_run(self, run_id: str,
                    on_event: Callable[[RunEvent], None] | None = None) -> Run:
        """Follow the server's execution of a run, passing on its progress events."""
        def forward(event: Any) -> None:
            if on_event is not None:
                on_event(RunEvent(event.run_id, event.stage, event.status, event.progress,
                                  event.message, event.data))

        return _run(self.client.follow(run_id, forward))

    def rerun(self, ref: str) -> Run:
        return _run(self.client.rerun(ref))

    def cancel_run(self, ref: str) -> Run:
        """Ask the server to stop a queued or running run; the run as it is now (a running
        step's process is being stopped)."""
        return _run(self.client.cancel_run(ref))

    def get_run(self, ref: str, project: str | None = None) -> Run:
        run = _run(self.client.get_run(ref))
        logs = {entry.index: entry.log for entry in self.client.run_logs(run.id)}
        for step in run.steps:
            step.log = logs.get(step.index, "")
        return run

    def run_layers(self, run: Run) -> list[Any] | None:
        """The per-layer profile of the run's compiled model, from the server (None when it
        has none)."""
        try:
            return list(self.client.run_layers(run.id))
        except ConflictError:
            return None

    def list_runs(self, project: str | None = None, status: str | None = None) -> list[Run]:
        return [_run(r) for r in self.client.list_runs(project, status)]

    def compare(self, refs: list[str], reference: str | None = None) -> list[ComparisonRow]:
        return [ComparisonRow.model_validate(r.model_dump())
                for r in self.client.compare(refs, reference)]

    def export_run(self, ref: str, out_dir: Path) -> list[Path]:
        """Download the run's export and unpack it into ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        archive = self.client.export_run(ref, out_dir / ".export.zip")
        try:
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if Path(n).name == n and n]
                for name in names:
                    (out_dir / name).write_bytes(zf.read(name))
        finally:
            archive.unlink(missing_ok=True)
        written = [out_dir / name for name in names]
        packages = {FILE_NAMES[kind] for kind in PACKAGE_DIRECTORY_KINDS}
        return written + [extract_package(path, path.with_suffix(""))
                          for path in written if path.name in packages]

    # deleting -----------------------------------------------------------------------------

    def delete_run(self, ref: str) -> Deletion:
        return Deletion.model_validate(self.client.delete_run(ref).model_dump())

    def delete_model(self, ref: str, *, force: bool = False) -> Deletion:
        return Deletion.model_validate(self.client.delete_model(ref, force=force).model_dump())

    def delete_dataset(self, ref: str, *, force: bool = False) -> Deletion:
        return Deletion.model_validate(self.client.delete_dataset(ref, force=force)
                                       .model_dump())

    def delete_project(self, project: str) -> Deletion:
        return Deletion.model_validate(self.client.delete_project(project).model_dump())

    def list_projects(self) -> list[Project]:
        return [Project.model_validate(p.model_dump()) for p in self.client.list_projects()]

    # signing keys -------------------------------------------------------------------------

    def signing_key(self, project: str | None = None, *, rotate: bool = False) -> SigningKey:
        """The project's (default: the account's own) signing key on the server."""
        project = project or self.client.me().default_project
        key = (self.client.rotate_signing_key(project) if rotate
               else self.client.signing_key(project))
        return SigningKey.model_validate(key.model_dump())

    # analysis -----------------------------------------------------------------------------

    def analyze(self, ref: str, device: str | None = None, runtime: str = "c",
                layers: bool = False, instructions: bool = False):
        """Static analysis here of an ONNX file, or of a registered ONNX model or a run's ONNX
        output downloaded from the server; the device profile comes from the server."""
        from tinymlaas.config import get_settings
        from tinymlaas.devices.analysis import analyze_model
        from tinymlaas.formats.models import load_onnx_checked

        profile = self.get_device(device) if device else None
        max_bytes = get_settings().max_model_bytes
        path = Path(ref)
        if path.is_file():
            load_onnx_checked(path, max_bytes)
            analysis = analyze_model(path, profile, runtime=runtime, layers=layers,
                                     instructions=instructions)
        else:
            with tempfile.TemporaryDirectory(prefix="tinymlaas-analyze-") as tmp:
                local = self._download_onnx(ref, Path(tmp))
                load_onnx_checked(local, max_bytes)
                analysis = analyze_model(local, profile, runtime=runtime, layers=layers,
                                         instructions=instructions)
        analysis.model = ref
        return analysis

    def _download_onnx(self, ref: str, folder: Path) -> Path:
        """The ONNX file of a registered model or of a run's output, in ``folder``."""
        try:
            model = self.client.get_model(ref)
        except NotFoundError:
            run = self.client.get_run(ref)
            if run.output_sha is None:
                raise InvalidInputError(f"run {run.id} has no output yet") from None
            kinds = {a.sha256: a.kind for a in self.client.run_artifacts(run.id)}
            kind = kinds.get(run.output_sha)
            if kind is not None and kind is not ArtifactKind.onnx:
                raise InvalidInputError(f"{ref} is {kind}; static analysis reads ONNX (run "
                                        "export-onnx first)") from None
            return self.client.download_output(run.id, folder / "model.onnx")
        if model.kind is not ArtifactKind.onnx:
            raise InvalidInputError(f"{ref} is {model.kind}; static analysis reads ONNX (run "
                                    "export-onnx first)")
        return self.client.download_model(model.id, folder / "model.onnx")
