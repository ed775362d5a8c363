"""``distill``: knowledge distillation from the input model (the teacher) into a student.

The student is either a width-reduced copy of the teacher's architecture (every channel
count scaled by ``width`` with torch-pruning, starting from the teacher's most important
channels, or re-initialised) or a model file the user supplies (``student``). Training mixes
the soft-target loss at ``temperature`` (weight ``alpha``) with the task loss.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import fx, nn

from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import InvalidInputError
from tinymlaas.transformers.base import StepContext, Transformer
from tinymlaas.transformers.torch.prune_structured import channel_prune
from tinymlaas.transformers.torch.training import (
    TrainingData,
    TrainingStep,
    TrainParams,
    count_parameters,
    fine_tune,
    load_trainable,
)

__all__ = ["Distill", "DistillParams"]


class DistillParams(TrainParams):
    epochs: int = Field(default=15, ge=1, le=1000, description="Training epochs.")
    lr: float = Field(default=2e-3, gt=0, le=1.0, description="Adam learning rate.")
    width: float = Field(default=0.5, gt=0, le=1, description="Channel multiplier of the "
                         "student built from the teacher (about width² of the parameters).")
    init: Literal["teacher", "random"] = Field(default="teacher", description="Start the "
                                               "built student from the teacher's most "
                                               "important channels, or from random weights.")
    student: str | None = Field(default=None, description="Path of a student model file "
                                "(.pt2 or .onnx) to train instead of building one.")
    temperature: float = Field(default=4.0, gt=0, le=100, description="Softmax temperature.")
    alpha: float = Field(default=0.7, ge=0, le=1, description="Weight of the distillation "
                         "loss (1 - alpha goes to the labels).")


def _reinitialise(model: nn.Module) -> None:
    module: Any
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _user_student(path_text: str) -> fx.GraphModule:
    path = Path(path_text)
    if not path.is_file():
        raise InvalidInputError(f"student model {path_text} does not exist")
    kind = ArtifactKind.onnx if path.suffix.lower() == ".onnx" else ArtifactKind.torch_exported
    return load_trainable(path, kind)


class Distill(TrainingStep, Transformer):
    name = "distill"
    version = "1"
    file_params = ("student",)
    summary = ("Knowledge distillation into a narrower copy of the model (or a given student), "
               "on the train split.")
    Params = DistillParams

    def transform(self, ctx: StepContext, model: fx.GraphModule, data: TrainingData,
                  shape: list[int]) -> tuple[nn.Module, dict[str, Any]]:
        params: DistillParams = ctx.params
        teacher = model.eval()
        if params.student:
            student = _user_student(params.student)
            source = "file"
        else:
            student = copy.deepcopy(teacher)
            if params.width < 1:
                channel_prune(student, shape, 1 - params.width)
            if params.init == "random":
                _reinitialise(student)
            source = "teacher-width"
        with torch.no_grad():
            probe = torch.zeros(2, *shape)
            if student(probe).shape != teacher(probe).shape:
                raise InvalidInputError("the student's output shape differs from the "
                                        "teacher's; they must match to distill")
        losses = fine_tune(student, data, params, ctx, teacher=teacher,
                           temperature=params.temperature, alpha=params.alpha,
                           span=(0.1, 0.9), label="distilling")
        return student, {"student": source,
                         "teacher_parameters": count_parameters(teacher),
                         "student_parameters": count_parameters(student),
                         "final_loss": losses[-1] if losses else None}
