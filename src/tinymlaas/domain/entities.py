"""Domain entities: plain pydantic models, returned by stores and services.

Stores never hand out ORM rows; entry points render these.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tinymlaas.domain.sites import SiteDataset

__all__ = [
    "Artifact",
    "ArtifactKind",
    "Dataset",
    "DatasetSplits",
    "Device",
    "Evaluation",
    "Model",
    "Pipeline",
    "PipelineStep",
    "Project",
    "Run",
    "RunStatus",
    "StepRecord",
    "StepStatus",
    "Task",
    "TensorSpec",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"

#: Bounds of user-supplied numbers: pipelines, steps, splits and devices.
MAX_STEPS = 64
MAX_STEP_TIMEOUT_S = 7 * 24 * 3600.0
MAX_STEP_MEMORY_MB = 1024 * 1024  # 1 TiB
MAX_SEED = 2**32 - 1
MAX_CALIBRATION_SIZE = 1_000_000
#: Step params: nesting depth, and the range of whole numbers (64-bit signed).
MAX_PARAMS_DEPTH = 32
_INT64 = 2**63


def check_json_numbers(value: Any, where: str = "params") -> None:
    """Refuse NaN, infinities, integers beyond 64 bits and nesting deeper than
    :data:`MAX_PARAMS_DEPTH` anywhere in a JSON-like value (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_PARAMS_DEPTH:
            raise ValueError(f"{where} are nested more than {MAX_PARAMS_DEPTH} levels deep")
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{where} hold {item!r}; numbers must be finite")
        elif isinstance(item, int):
            if not -_INT64 <= item < _INT64:
                raise ValueError(f"{where} hold a whole number beyond 64 bits")
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Entity(BaseModel):
    model_config = ConfigDict(frozen=False, extra="forbid")


class Task(StrEnum):
    """What a model does; decides how its quality is measured."""

    classification = "classification"
    regression = "regression"
    anomaly = "anomaly"
    embedding = "embedding"
    generic = "generic"


class ArtifactKind(StrEnum):
    """The format of an artifact blob. Directory-shaped kinds are stored as zip files."""

    onnx = "onnx"
    torch_exported = "torch-exported"
    torchscript = "torchscript"
    c_source = "c-source"
    c_bundle = "c-bundle"
    python_wheel = "python-wheel"
    signed_image = "signed-image"
    bundle_zip = "bundle-zip"
    docker_context = "docker-context"
    dataset_npz = "dataset-npz"
    report = "report"
    outputs_npy = "outputs-npy"
    file = "file"


#: Kinds whose blob is a zip of a directory; steps see them unpacked.
DIRECTORY_KINDS = frozenset({ArtifactKind.c_source, ArtifactKind.c_bundle,
                             ArtifactKind.docker_context, ArtifactKind.signed_image})
#: Kinds that installers make: what a device or a host installs.
INSTALLER_KINDS = frozenset({ArtifactKind.c_bundle, ArtifactKind.python_wheel,
                             ArtifactKind.docker_context, ArtifactKind.signed_image})
#: Installer outputs that an export also unpacks, ready to build.
PACKAGE_DIRECTORY_KINDS = INSTALLER_KINDS & DIRECTORY_KINDS
#: Kinds a model can be: inputs of transformers and evaluation.
MODEL_KINDS = frozenset({ArtifactKind.onnx, ArtifactKind.torch_exported,
                         ArtifactKind.torchscript})
#: Kinds the evaluation can run: models, and generated C (built for the host).
EVALUABLE_KINDS = MODEL_KINDS | {ArtifactKind.c_source}
#: The file name an artifact of each kind goes by when nobody named it.
FILE_NAMES = {ArtifactKind.onnx: "model.onnx", ArtifactKind.torch_exported: "model.pt2",
              ArtifactKind.torchscript: "model.pt", ArtifactKind.c_source: "c-source.zip",
              ArtifactKind.c_bundle: "c-bundle.zip",
              ArtifactKind.signed_image: "signed-image.zip",
              ArtifactKind.docker_context: "docker-context.zip",
              ArtifactKind.bundle_zip: "bundle.zip", ArtifactKind.dataset_npz: "dataset.npz",
              ArtifactKind.report: "report.json", ArtifactKind.outputs_npy: "outputs.npy",
              ArtifactKind.file: "file.bin"}


class TensorSpec(Entity):
    name: str
    shape: list[int | str]
    dtype: str


class Artifact(Entity):
    """An immutable, content-addressed blob with its lineage."""

    sha256: str
    kind: ArtifactKind
    size_bytes: int
    filename: str
    parents: list[str] = Field(default_factory=list)
    step_key: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Project(Entity):
    id: str
    name: str
    owner: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Model(Entity):
    id: str
    name: str = Field(pattern=NAME_PATTERN)
    project: str = "default"
    artifact_sha: str
    kind: ArtifactKind
    task: Task = Task.classification
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    parameters: int = 0
    description: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class DatasetSplits(Entity):
    """How samples are split, deterministically, by a seeded permutation."""

    test_fraction: float = Field(default=0.2, gt=0, lt=1, allow_inf_nan=False)
    calibration_size: int = Field(default=256, gt=0, le=MAX_CALIBRATION_SIZE)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)


class Dataset(Entity):
    id: str
    name: str = Field(pattern=NAME_PATTERN)
    project: str = "default"
    artifact_sha: str
    source_format: Literal["npz", "csv", "image-zip", "builtin", "text"]
    task: Task = Task.classification
    num_samples: int
    feature_shape: list[int]
    num_classes: int | None = None
    class_names: list[str] = Field(default_factory=list)
    splits: DatasetSplits = Field(default_factory=DatasetSplits)
    location: str = Field(default="platform", description="'platform', or "
                          "site://NAME/path for data that stays at a site.")
    site: SiteDataset | None = Field(default=None, description="For data at a site: where "
                                     "its workers read it.")
    created_at: datetime = Field(default_factory=utcnow)


class Device(Entity):
    """A target profile: what the hardware is and what it can run."""

    name: str = Field(pattern=NAME_PATTERN)
    title: str = ""
    category: Literal["mcu", "sbc", "edge-gpu", "server", "phone"] = "mcu"
    arch: str = Field(description="e.g. cortex-m4, cortex-m7, xtensa-lx7, cortex-a72, x86-64")
    clock_mhz: float = Field(gt=0, le=1e6, allow_inf_nan=False)
    ram_kb: int = Field(gt=0, le=2**40)
    flash_kb: int = Field(gt=0, le=2**40)
    features: list[str] = Field(default_factory=list, description="fpu, dsp, helium, neon, avx2")
    runtimes: list[str] = Field(default_factory=list, description="c, tflite-micro, onnxruntime")
    macs_per_cycle: float = Field(default=0.5, gt=0, le=1e6, allow_inf_nan=False,
                                  description="int8 MACs per cycle, for estimates")
    custom: bool = False
    project: str | None = Field(default=None, description="The project owning a custom "
                                "device; none for the shipped catalog.")
    notes: str = ""


class PipelineStep(Entity):
    transformer: str
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_STEP_TIMEOUT_S,
                                    allow_inf_nan=False, description="Wall-clock limit of "
                                    "this step, at most 7 days (default: the "
                                    "TINYMLAAS_STEP_TIMEOUT_S setting).")
    memory_mb: int | None = Field(default=None, gt=0, le=MAX_STEP_MEMORY_MB,
                                  description="Resident memory limit, at most 1 TiB (default: "
                                  "the TINYMLAAS_STEP_MEMORY_MB setting).")

    @field_validator("params")
    @classmethod
    def _finite_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_json_numbers(value)
        return value


class Fidelity(Entity):
    """A pipeline's fidelity gate: below these, a run ends ``degraded``, not ``succeeded``.

    Each threshold applies to one task's figures; ``null`` switches that one off. The
    defaults catch a compression that destroyed the model (5 accuracy points, a mean cosine
    under 0.95, an output SNR under 20 dB, i.e. an error at 10 % of the signal's amplitude)
    without failing the ordinary losses of int8. Regression has no default (an MAE's scale is
    the label's): set ``max_mae_increase_pct`` to gate it.
    """

    max_accuracy_drop: float | None = Field(
        default=5.0, ge=0.0, le=100.0, allow_inf_nan=False,
        description="classification: largest accuracy loss against the input model, in "
        "points")
    min_cosine: float | None = Field(
        default=0.95, ge=-1.0, le=1.0, allow_inf_nan=False,
        description="embedding: smallest mean cosine between the output's and the input "
        "model's outputs")
    min_snr_db: float | None = Field(
        default=20.0, ge=-200.0, le=400.0, allow_inf_nan=False,
        description="generic: smallest signal-to-noise ratio of the output's outputs "
        "against the input model's, in dB")
    max_mae_increase_pct: float | None = Field(
        default=None, ge=0.0, le=1e6, allow_inf_nan=False,
        description="regression: largest MAE increase over the input model's, in percent "
        "(off by default)")
    max_auc_drop: float | None = Field(
        default=0.05, ge=0.0, le=1.0, allow_inf_nan=False,
        description="anomaly: largest AUC loss against the input model")


class Pipeline(Entity):
    """An ordered list of steps plus what to evaluate."""

    name: str = Field(default="pipeline", pattern=NAME_PATTERN)
    model: str | None = None
    dataset: str | None = None
    device: str | None = None
    project: str | None = None
    steps: list[PipelineStep] = Field(default_factory=list, max_length=MAX_STEPS,
                                      description=f"At most {MAX_STEPS} steps.")
    evaluate: bool = True
    evaluation_split: Literal["test", "validation", "holdout"] = Field(
        default="test", description="The samples the evaluation uses: the dataset's test "
        "split, or one of its two halves (optimize selects on `validation` and reports on "
        "`holdout`).")
    fidelity: Fidelity | None = Field(default=None, description="Thresholds below which "
                                      "the run ends degraded; none: the defaults.")

    @field_validator("steps", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        """Accept ``- fuse`` and ``- quantize-static: {per_channel: true}`` as steps."""
        if not isinstance(value, list):
            return value
        out: list[Any] = []
        for item in value:
            if isinstance(item, str):
                out.append({"transformer": item})
            elif isinstance(item, dict) and len(item) == 1 and "transformer" not in item:
                (name, params), = item.items()
                out.append({"transformer": name, "params": params or {}})
            else:
                out.append(item)
        return out


class RunStatus(StrEnum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    #: Every step succeeded but the output missed the pipeline's fidelity gate against the
    #: input model; its artifacts are kept (the user decides).
    degraded = "degraded"
    failed = "failed"
    cancelled = "cancelled"


class StepStatus(StrEnum):
    pending = "pending"
    running = "running"
    cached = "cached"
    succeeded = "succeeded"
    failed = "failed"
    skipped = "skipped"
    cancelled = "cancelled"


class StepRecord(Entity):
    index: int
    transformer: str
    params: dict[str, Any] = Field(default_factory=dict)
    status: StepStatus = StepStatus.pending
    key: str | None = None
    output_sha: str | None = None
    progress: float = 0.0
    message: str = ""
    log: str = ""
    error: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None


class Evaluation(Entity):
    """Metrics of one artifact on one dataset's test split (and a device, for fit)."""

    artifact_sha: str
    dataset_id: str
    reference_sha: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)


class Run(Entity):
    id: str
    name: str
    project: str = "default"
    model_id: str
    dataset_id: str | None = Field(default=None, description="None when no step and no "
                                   "evaluation of the run needs data.")
    device: str | None = None
    site: str | None = Field(default=None, description="The id of the site whose workers "
                             "run the steps; none: the server's own processes.")
    pipeline: Pipeline
    status: RunStatus = RunStatus.pending
    error: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    output_sha: str | None = None
    baseline: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
