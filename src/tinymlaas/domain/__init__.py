"""Typed entities shared by every layer."""

from tinymlaas.domain.entities import (
    Artifact,
    ArtifactKind,
    Dataset,
    DatasetSplits,
    Device,
    Evaluation,
    Model,
    Pipeline,
    PipelineStep,
    Project,
    Run,
    RunStatus,
    StepRecord,
    StepStatus,
    Task,
    TensorSpec,
)

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
