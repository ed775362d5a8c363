"""Request (``*Create``) and response (``*Public``) bodies of the HTTP API.

Pure pydantic, shared by the server (``response_model``) and the typed SDK
(:class:`tinymlaas.Client`), so the two cannot drift apart. Request bodies reject unknown
fields; response bodies ignore fields the client does not know yet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tinymlaas.domain import ArtifactKind, Fidelity, RunStatus, StepStatus, Task, TensorSpec
from tinymlaas.domain.comparison import ComparisonRow
from tinymlaas.domain.entities import (
    MAX_CALIBRATION_SIZE,
    MAX_SEED,
    MAX_STEP_MEMORY_MB,
    MAX_STEP_TIMEOUT_S,
    MAX_STEPS,
    NAME_PATTERN,
    check_json_numbers,
)
from tinymlaas.domain.sites import SiteDataset

__all__ = [
    "ArtifactPublic",
    "CompareRequest",
    "ComparisonPublic",
    "DatasetBuiltinCreate",
    "DatasetHubImport",
    "DatasetPublic",
    "DeviceCreate",
    "DevicePublic",
    "ErrorBody",
    "ExternalTransformerCreate",
    "Health",
    "LayerPublic",
    "LoginRequest",
    "LoginResponse",
    "MemberPublic",
    "ModelHubImport",
    "ModelPublic",
    "PipelineSpec",
    "PipelineStepSpec",
    "ProjectCreate",
    "ProjectPublic",
    "RunCreate",
    "RunEventPublic",
    "RunMetrics",
    "RunPublic",
    "ShareCreate",
    "StepLogPublic",
    "StepPublic",
    "TemplateCreate",
    "TemplatePublic",
    "TokenCreate",
    "TokenCreated",
    "TokenPublic",
    "TransformerPublic",
    "UserCreate",
    "UserPublic",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookPublic",
]

Name = str
Ref = str


def _json_integer(value: Any) -> Any:
    """A JSON Schema ``integer``: a whole number (``3`` or ``3.0``), never ``true`` or ``"3"``
    (lax validation would read booleans and digit strings as numbers)."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("Input should be an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _json_number(value: Any) -> Any:
    """A JSON Schema ``number``: never ``true`` or ``"0.5"``."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("Input should be a number")
    return value


#: An integer of a request body (strict: see :func:`_json_integer`).
StrictInteger = Annotated[int, BeforeValidator(_json_integer), Field(strict=True)]
#: A number of a request body (``true`` is not 1.0).
StrictNumber = Annotated[float, BeforeValidator(_json_number)]
#: One dimension of a model input shape given by a user (without the batch dimension).
InputDim = Annotated[StrictInteger, Field(ge=1, le=1 << 20)]
#: One side of the size images are resized to.
ImageSide = Annotated[StrictInteger, Field(ge=1, le=4096)]

#: An email address (dot-atom local part, host name with a top-level domain), as
#: registration accepts it. JSON Schema ``format: email`` plus this pattern, so clients know.
EMAIL_PATTERN = (r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                 r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")


def _email_lengths(value: str) -> str:
    local, _, domain = value.rpartition("@")
    if len(local) > 64 or len(domain) > 253:
        raise ValueError("an email address has at most 64 characters before the @ and 253 "
                         "after it")
    return value


#: An email address in a request body (registration, log-in, sharing): refused with a 422
#: when it is not one.
Email = Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN,
                             json_schema_extra={"format": "email"},
                             examples=["ada@example.com"]),
                  AfterValidator(_email_lengths)]
#: An http(s) URL (JSON Schema ``format: uri``).
HttpUrlText = Annotated[str, Field(min_length=8, max_length=2000, pattern=r"^https?://[^\s]+$",
                                   json_schema_extra={"format": "uri"},
                                   examples=["https://ci.example.com/hook"])]


def _exactly_one_of(*alternatives: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """JSON Schema extra saying exactly one of the fields is given (and not null)."""
    return {"oneOf": [{"required": [name], "properties": {name: schema}}
                      for name, schema in alternatives]}


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class Create(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        """No text anywhere may hold NUL characters (databases refuse them)."""
        if _has_nul(data):
            raise ValueError("NUL characters are not allowed")
        return data

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, data: Any) -> Any:
        """No number anywhere (free-form fields too) may be NaN, infinite or beyond 64 bits."""
        check_json_numbers(data, "request bodies")
        return data


class Public(BaseModel):
    model_config = ConfigDict(extra="ignore", from_attributes=True)

    @model_validator(mode="before")
    @classmethod
    def _from_entity(cls, data: Any) -> Any:
        """Domain entities (and their nested models) validate through their dump."""
        return data.model_dump() if isinstance(data, BaseModel) else data


class ErrorBody(Public):
    """The one error shape of every 4xx and 5xx response."""

    code: str = Field(description="Stable machine-readable code, e.g. not_found.")
    message: str = Field(description="What was wrong and what to do.")
    details: dict[str, Any] = Field(default_factory=dict)


class Health(Public):
    status: Literal["ok"] = "ok"
    version: str


# accounts ---------------------------------------------------------------------------------


class UserCreate(Create):
    email: Email
    password: str = Field(min_length=8, max_length=1024)
    name: str = Field(default="", max_length=100)


class UserPublic(Public):
    id: str
    email: str
    name: str
    default_project: str
    is_admin: bool = False
    created_at: datetime


class RegistrationResponse(Public):
    """The same answer whether or not the address already had an account."""

    email: str
    message: str


class LoginRequest(Create):
    email: Email
    password: str = Field(max_length=1024)


class LoginResponse(Public):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime | None
    user: UserPublic


class TokenCreate(Create):
    name: str = Field(default="api", min_length=1, max_length=100)


class TokenPublic(Public):
    id: str
    name: str
    kind: str
    created_at: datetime
    expires_at: datetime | None = None


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret; shown only once.")


class ProjectCreate(Create):
    name: str = Field(min_length=1, max_length=100)


class ProjectPublic(Public):
    id: str
    name: str
    owner: str | None
    created_at: datetime


class ShareCreate(Create):
    email: Email
    role: Literal["editor", "viewer"] = "editor"


class MemberPublic(Public):
    user_id: str
    email: str
    role: str
    created_at: datetime


class DeletionPublic(Public):
    """What a delete removed and the storage it freed."""

    runs: list[str]
    models: list[str]
    datasets: list[str]
    freed_artifacts: int = Field(description="Artifacts no other run, model or dataset used")
    freed_bytes: int


class SigningKeyPublic(Public):
    """The public half of a project's firmware signing key."""

    project: str
    fingerprint: str = Field(description="sha256 (hex) of the public key's DER encoding")
    public_key_pem: str
    retired: list[str] = Field(description="Fingerprints of rotated-out keys")


# models, datasets, devices ----------------------------------------------------------------


class ModelPublic(Public):
    id: str
    name: str
    project: str
    artifact_sha: str
    kind: ArtifactKind
    task: Task
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: int
    description: str
    created_at: datetime


class HubImport(Create):
    repo_id: str = Field(min_length=1, max_length=200, examples=["org/tiny-model"])
    filename: str = Field(min_length=1, max_length=500, examples=["model.onnx"])
    revision: str | None = Field(default=None, max_length=100)
    name: Name | None = Field(default=None, pattern=NAME_PATTERN)
    project: str | None = None


class ModelHubImport(HubImport):
    filename: str | None = Field(  # type: ignore[assignment]
        default=None, min_length=1, max_length=500, examples=["model.onnx"],
        description="A model file to register as it is; omit it to import the whole model "
        "repo (config, safetensors weights, tokenizer) exported to ONNX with its tokenizer.")
    task: Task | None = Field(default=None, description="Default: classification for a file; "
                              "for a whole repo, from its architecture.")
    input_shape: list[InputDim] | None = Field(default=None, max_length=8)
    description: str = Field(default="", max_length=2000)


class SplitsCreate(Create):
    test_fraction: StrictNumber = Field(default=0.2, gt=0, lt=1, allow_inf_nan=False)
    calibration_size: StrictInteger = Field(default=256, gt=0, le=MAX_CALIBRATION_SIZE)
    seed: StrictInteger = Field(default=0, ge=0, le=MAX_SEED)


class DatasetBuiltinCreate(SplitsCreate):
    source: Literal["digits"] = "digits"
    name: Name | None = Field(default=None, pattern=NAME_PATTERN)
    project: str | None = None


class DatasetSiteCreate(SplitsCreate):
    source: str = Field(min_length=8, max_length=700, pattern=r"^site://",
                        description="site://NAME/relative/path: a file under the data root of "
                        "site NAME's workers; its bytes stay there.",
                        examples=["site://factory/data.npz"])
    name: Name | None = Field(default=None, pattern=NAME_PATTERN)
    project: str | None = None
    task: Task | None = None
    label_column: str | None = Field(default=None, max_length=200)
    image_size: tuple[ImageSide, ImageSide] | None = None


class DatasetHubImport(HubImport, SplitsCreate):
    task: Task | None = None
    label_column: str | None = None
    image_size: tuple[ImageSide, ImageSide] | None = None
    tokenizer: str | None = Field(default=None, max_length=200, description="Text (.csv, "
                                  ".jsonl): the model whose tokenizer tokenizes it.")
    text_column: str = Field(default="text", min_length=1, max_length=200)
    text_pair_column: str | None = Field(default=None, min_length=1, max_length=200)
    max_length: StrictInteger = Field(default=128, ge=2, le=8192)
    padding: Literal["max_length", "longest"] = "max_length"


class DatasetPublic(Public):
    id: str
    name: str
    project: str
    artifact_sha: str
    source_format: str
    task: Task
    num_samples: int
    feature_shape: list[int]
    num_classes: int | None
    class_names: list[str]
    splits: dict[str, Any]
    location: str
    site: SiteDataset | None = Field(default=None, description="For data that stays at a "
                                     "site: where its workers read it and the file's sha256.")
    created_at: datetime


class DeviceCreate(Create):
    name: Name = Field(pattern=NAME_PATTERN)
    title: str = Field(default="", max_length=200)
    category: Literal["mcu", "sbc", "edge-gpu", "server", "phone"] = "mcu"
    arch: str = Field(min_length=1, max_length=50)
    clock_mhz: StrictNumber = Field(gt=0, le=1e6, allow_inf_nan=False)
    ram_kb: StrictInteger = Field(gt=0, le=2**40)
    flash_kb: StrictInteger = Field(gt=0, le=2**40)
    features: list[str] = Field(default_factory=list, max_length=50)
    runtimes: list[str] = Field(default_factory=list, max_length=50)
    macs_per_cycle: StrictNumber = Field(default=0.5, gt=0, le=1e6, allow_inf_nan=False)
    notes: str = Field(default="", max_length=2000)
    project: Ref | None = Field(default=None, description="Owning project (default: yours).")


class DevicePublic(Public):
    name: str
    title: str
    category: str
    arch: str
    clock_mhz: float
    ram_kb: int
    flash_kb: int
    features: list[str]
    runtimes: list[str]
    macs_per_cycle: float
    custom: bool
    notes: str
    project: str | None = None


# transformers and templates ---------------------------------------------------------------


class TransformerPublic(Public):
    name: str
    version: str
    summary: str
    accepts: list[str]
    produces: str
    needs: str
    external: bool = False
    project: str | None = None
    params_schema: dict[str, Any]


class ExternalTransformerCreate(Create):
    """A command or container image (exactly one) that honours the external file contract."""

    model_config = ConfigDict(json_schema_extra=_exactly_one_of(
        ("command", {"type": "array"}), ("image", {"type": "string"})))

    name: Name = Field(pattern=NAME_PATTERN)
    project: str | None = None
    summary: str = Field(default="", max_length=500)
    command: list[str] | None = Field(default=None, max_length=100,
                                      description="argv with {in} {out} {params}.")
    image: str | None = Field(default=None, max_length=300)
    produces: ArtifactKind = ArtifactKind.onnx
    config: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_of(self) -> ExternalTransformerCreate:
        if (self.command is None) == (self.image is None):
            raise ValueError("give exactly one of 'command' or 'image'")
        return self


class PipelineStepSpec(Create):
    """One step in its long form: ``{transformer, params, timeout_s, memory_mb}``."""

    transformer: str = Field(min_length=1, description="A transformer name (GET /transformers).")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="The transformer's parameters (its params_schema).")
    timeout_s: StrictNumber | None = Field(default=None, gt=0, le=MAX_STEP_TIMEOUT_S,
                                           allow_inf_nan=False,
                                    description="Wall-clock limit of this step, at most 7 days.")
    memory_mb: StrictInteger | None = Field(default=None, gt=0, le=MAX_STEP_MEMORY_MB,
                                  description="Resident memory limit, at most 1 TiB.")


#: A step: a transformer name (``"fuse"``), ``{name: params}`` (``{"quantize-static":
#: {"per_channel": true}}``) or the long form.
PipelineStepItem = (Annotated[str, Field(min_length=1)] | PipelineStepSpec
                    | Annotated[dict[str, dict[str, Any] | None],
                                Field(min_length=1, max_length=1)])


class PipelineSpec(Create):
    """A pipeline as the service accepts it (see ``tinymlaas.domain.Pipeline``)."""

    name: Name = Field(default="pipeline", pattern=NAME_PATTERN)
    model: str | None = None
    dataset: str | None = None
    device: str | None = None
    project: str | None = None
    steps: list[PipelineStepItem] = Field(default_factory=list, max_length=MAX_STEPS,
                                          description=f"At most {MAX_STEPS} steps.")
    evaluate: bool = Field(default=True, strict=True)
    evaluation_split: Literal["test", "validation", "holdout"] = Field(
        default="test", description="The samples the evaluation uses: the dataset's test "
        "split, or one of its two seeded halves (optimize selects on `validation` and "
        "reports on `holdout`).")
    fidelity: Fidelity | None = Field(default=None, description="Thresholds below which "
                                      "the run ends degraded (default: 5 accuracy points, a "
                                      "mean cosine of 0.95, an SNR of 20 dB); null: one off.")

    def as_dict(self) -> dict[str, Any]:
        """The pipeline exactly as it was sent (short forms kept)."""
        return self.model_dump(mode="json", exclude_unset=True)


class TemplateCreate(Create):
    name: Name = Field(pattern=NAME_PATTERN)
    project: str | None = None
    description: str = Field(default="", max_length=2000)
    pipeline: PipelineSpec = Field(description="A pipeline: {steps: [...], evaluate: bool}.")


class TemplatePublic(Public):
    id: str
    name: str
    project: str
    description: str
    pipeline: dict[str, Any]
    builtin: bool


# runs -------------------------------------------------------------------------------------


class RunCreate(Create):
    """A run from an inline pipeline or a template name (exactly one); it is queued at once."""

    model_config = ConfigDict(json_schema_extra=_exactly_one_of(
        ("pipeline", {"type": "object"}), ("template", {"type": "string"})))

    model: Ref = Field(min_length=1, description="Model id or name.")
    dataset: Ref | None = Field(default=None, min_length=1, description="Dataset id or name; "
                                "needed when a step or the evaluation uses data.")
    pipeline: PipelineSpec | None = None
    template: str | None = None
    device: str | None = None
    name: Name | None = Field(default=None, pattern=NAME_PATTERN)
    project: str | None = None
    site: Ref | None = Field(default=None, min_length=1, description="A site (name or id) of "
                             "the run's project whose workers run the steps; 409 when this "
                             "server has no broker or the site no live worker. A run on a "
                             "site's dataset runs at that site: leave it out, or give that "
                             "site (another is a 400).")

    @model_validator(mode="after")
    def _one_of(self) -> RunCreate:
        if (self.pipeline is None) == (self.template is None):
            raise ValueError("give exactly one of 'pipeline' or 'template'")
        return self


class StepPublic(Public):
    index: int
    transformer: str
    params: dict[str, Any]
    status: StepStatus
    key: str | None
    output_sha: str | None
    progress: float
    message: str
    error: str | None
    metrics: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None


class StepLogPublic(Public):
    index: int
    transformer: str
    status: StepStatus
    log: str


class RunPublic(Public):
    id: str
    name: str
    project: str
    model_id: str
    dataset_id: str | None
    device: str | None
    site: str | None = Field(default=None, description="The id of the site whose workers "
                             "run the steps; none: the server's own processes.")
    pipeline: dict[str, Any]
    status: RunStatus
    error: str | None
    steps: list[StepPublic]
    output_sha: str | None
    baseline: dict[str, Any]
    result: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class LayerPublic(Public):
    """One kernel call of a run's compiled model, in execution order (the compiler's
    per-layer profile)."""

    step: int = Field(description="position in execution order, from 0")
    kernel: str = Field(description="the C kernel function called")
    nodes: list[str] = Field(description="names of the ONNX nodes the call implements")
    op_type: str = Field(description="their operator types, '+'-joined (e.g. Conv+Relu)")
    macs: int
    output_shape: list[int] = Field(description="shape of the first tensor it writes")
    live_bytes: int = Field(description="bytes of the arena buffers live at this step")
    flash_bytes: int = Field(description="constant bytes this call owns (first use)")
    instructions: int | None = Field(default=None, description="instructions it retires on "
                                     "the emulated Cortex-M4, when measured")


class RunMetrics(Public):
    run_id: str
    status: RunStatus
    baseline: dict[str, Any]
    result: dict[str, Any]
    steps: list[dict[str, Any]]


class CompareRequest(Create):
    runs: list[Ref] = Field(min_length=1, max_length=100)
    reference: Ref | None = None


class ComparisonPublic(Public, ComparisonRow):
    """One run in a comparison (the service's row, as the API shows it)."""


class ArtifactPublic(Public):
    sha256: str
    kind: ArtifactKind
    size_bytes: int
    filename: str
    parents: list[str]
    step_key: str | None
    created_at: datetime


class RunEventPublic(Public):
    """One server-sent event of ``GET /runs/{id}/events`` (``event: progress``)."""

    run_id: str
    stage: int | str
    status: str
    progress: float = 0.0
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


# webhooks ---------------------------------------------------------------------------------


class WebhookCreate(Create):
    url: HttpUrlText
    project: str | None = None
    secret: str | None = Field(default=None, min_length=8, max_length=255)
    events: list[Literal["run.succeeded", "run.degraded", "run.failed",
                         "run.cancelled"]] | None = None


class WebhookPublic(Public):
    id: str
    project: str
    url: str
    events: list[str]
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="The HMAC-SHA256 key; shown only once.")
