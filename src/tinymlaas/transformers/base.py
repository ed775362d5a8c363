"""The transformer contract.

A transformer is one module declaring ``name``, ``version``, a pydantic ``Params`` model
(``extra="forbid"``, working defaults), the artifact kinds it ``accepts`` and ``produces``,
and what data it ``needs``. ``run(ctx)`` reads the input files, writes into
``ctx.out_dir`` and returns a :class:`StepOutput`. It touches files only: no database,
no network, no global state.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict

from tinymlaas.domain import ArtifactKind, DatasetSplits, Device, Task, TensorSpec

__all__ = ["CName", "DatasetAccess", "NoParams", "Params", "StepContext", "StepOutput",
           "Transformer"]


class Params(BaseModel):
    """Base of every transformer's parameters: unknown fields are errors, and so are NaN and
    infinite numbers (fields that size work also carry an upper bound, ``le=``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _c_identifier(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,40}", value):
        raise ValueError("must be a C identifier (letters, digits, underscore)")
    return value.lower()


#: A C symbol prefix (``<name>_run``, ``<NAME>_INPUT0_SIZE``), kept lower case.
CName = Annotated[str, AfterValidator(_c_identifier)]


class NoParams(Params):
    pass


@dataclass
class DatasetAccess:
    """The run's dataset, loaded lazily, with its deterministic splits."""

    path: Path
    task: Task
    splits: DatasetSplits
    num_classes: int | None = None
    _arrays: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            from tinymlaas.formats.datasets import read_canonical

            self._arrays = read_canonical(self.path)
        return self._arrays

    def split(self, name: Literal["train", "test", "calibration", "validation", "holdout"]
              ) -> tuple[np.ndarray, np.ndarray]:
        from tinymlaas.formats.datasets import split_indices

        X, y = self.arrays()
        index = split_indices(len(X), self.splits)[name]
        return X[index], y[index]


@dataclass
class StepContext:
    """Everything a step may use. ``input_path`` is a file, or a directory for directory kinds."""

    input_path: Path
    input_kind: ArtifactKind
    params: Any
    out_dir: Path
    work_dir: Path
    input_specs: list[TensorSpec] = field(default_factory=list)
    dataset: DatasetAccess | None = None
    #: The run's target device, given to transformers that declare ``uses_device``.
    device: Device | None = None
    #: The project's private key directory (mode 0700), given to transformers that declare
    #: ``signs``. Keys never go into ``out_dir``.
    key_dir: Path | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("tinymlaas.step"))
    report_progress: Callable[[float, str], None] = lambda fraction, message: None

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1] with a short message."""
        self.report_progress(min(1.0, max(0.0, fraction)), message)

    def require_dataset(self) -> DatasetAccess:
        if self.dataset is None:
            from tinymlaas.errors import InvalidInputError

            raise InvalidInputError("this step needs a dataset; give the run one")
        return self.dataset

    def require_device(self) -> Device:
        if self.device is None:
            from tinymlaas.errors import InvalidInputError

            raise InvalidInputError("this step needs a target device; give the run one")
        return self.device


@dataclass
class StepOutput:
    """What a step made: a file or directory in ``out_dir``, its kind, and any metrics."""

    path: Path
    kind: ArtifactKind
    metrics: dict[str, Any] = field(default_factory=dict)


class Transformer:
    """Base class. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    accepts: ClassVar[frozenset[ArtifactKind]] = frozenset({ArtifactKind.onnx})
    produces: ClassVar[ArtifactKind] = ArtifactKind.onnx
    needs: ClassVar[Literal["none", "calibration", "train"]] = "none"
    #: Params that name input files: their content (not just the path) keys the cache.
    file_params: ClassVar[tuple[str, ...]] = ()
    #: Whether the output depends on the run's device (it then keys the cache too).
    uses_device: ClassVar[bool] = False
    #: Whether the step signs with the project's key (its public half keys the cache).
    signs: ClassVar[bool] = False

    def check_device(self, device: Device | None, params: BaseModel) -> None:
        """Refuse, before a run starts, a target this step cannot work for (raise
        :class:`~tinymlaas.errors.InvalidInputError` saying why). Most steps take any."""

    def output_kind(self, input_kind: ArtifactKind, params: BaseModel) -> ArtifactKind:
        """The kind this step makes from ``input_kind`` (most always make ``produces``)."""
        return self.produces

    def run(self, ctx: StepContext) -> StepOutput:
        raise NotImplementedError
