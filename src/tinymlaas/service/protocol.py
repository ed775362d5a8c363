"""``ServicesProtocol``: what the CLI asks of its services object.

The CLI works the same on this machine and against a server: ``tinymlaas.cli.main.services()``
returns either the local :class:`~tinymlaas.service.Services` (database, artifacts, engine
here) or :class:`~tinymlaas.cli.remote.RemoteServices` (the same calls over the HTTP API with
:class:`tinymlaas.Client`). This protocol names every method a CLI command calls on it, with
the parameters the CLI passes, so both implementations keep them; a test compares their
signatures with it. An implementation may take more optional parameters than listed here
(the local one also takes ``project`` when deleting, for example).

At run time the module needs only the standard library; the types it names are imported for
type checking only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tinymlaas.devices.analysis import Analysis
    from tinymlaas.domain import Dataset, DatasetSplits, Device, Model, Pipeline, Project, Run, Task
    from tinymlaas.domain.comparison import ComparisonRow
    from tinymlaas.engine import RunEvent
    from tinymlaas.formats.text_datasets import TextOptions
    from tinymlaas.service.services import Deletion, SigningKey

__all__ = ["ServicesProtocol"]


class ServicesProtocol(Protocol):
    """The services the CLI commands use, here or on a server."""

    def close(self) -> None: ...

    # models and datasets
    def add_model(self, path: Path, name: str | None = None, *, task: Task = ...,
                  project: str = ..., input_shape: list[int] | None = None,
                  description: str = "") -> Model: ...

    def add_hf_model(self, source: str, name: str | None = None, *,
                     revision: str | None = None, task: Task | None = None,
                     project: str = ..., description: str = "") -> Model: ...

    def list_models(self, project: str | None = None) -> list[Model]: ...

    def get_model(self, ref: str, project: str | None = None) -> Model: ...

    def add_dataset(self, source: str, name: str | None = None, *, task: Task | None = None,
                    label_column: str | None = None,
                    image_size: tuple[int, int] | None = None,
                    splits: DatasetSplits | None = None, project: str = ...,
                    text: TextOptions | None = None) -> Dataset: ...

    def list_datasets(self, project: str | None = None) -> list[Dataset]: ...

    def get_dataset(self, ref: str, project: str | None = None) -> Dataset: ...

    # devices
    def list_devices(self) -> list[Device]: ...

    def get_device(self, name: str) -> Device: ...

    def add_device(self, device: Device) -> Device: ...

    def analyze(self, ref: str, device: str | None = None, runtime: str = "c",
                layers: bool = False, instructions: bool = False) -> Analysis: ...

    # runs
    def create_run(self, pipeline: Pipeline, *, model: str | None = None,
                   dataset: str | None = None, device: str | None = None,
                   name: str | None = None, project: str | None = None,
                   site: str | None = None) -> Run: ...

    def execute_run(self, run_id: str,
                    on_event: Callable[[RunEvent], None] | None = None) -> Run: ...

    def rerun(self, ref: str) -> Run: ...

    def cancel_run(self, ref: str) -> Run: ...

    def get_run(self, ref: str, project: str | None = None) -> Run: ...

    def list_runs(self, project: str | None = None, status: str | None = None) -> list[Run]: ...

    def run_layers(self, run: Run) -> list[Any] | None: ...

    def compare(self, refs: list[str], reference: str | None = None) -> list[ComparisonRow]: ...

    def export_run(self, ref: str, out_dir: Path) -> list[Path]: ...

    # deleting, projects and keys
    def delete_run(self, ref: str) -> Deletion: ...

    def delete_model(self, ref: str, *, force: bool = False) -> Deletion: ...

    def delete_dataset(self, ref: str, *, force: bool = False) -> Deletion: ...

    def delete_project(self, project: str) -> Deletion: ...

    def list_projects(self) -> list[Project]: ...

    def signing_key(self, project: str | None = None, *, rotate: bool = False) -> SigningKey: ...

