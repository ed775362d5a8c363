"""Shared machinery of the training-based transformers.

Every training step works on a *trainable module*: a ``torch.fx.GraphModule`` whose
convolutions, linear layers and batch norms are real ``nn.Conv*``, ``nn.Linear`` and
``nn.BatchNorm*`` modules (so ``train()``/``eval()`` switch batch-norm behaviour and
torch-pruning can see channels), and whose other operations are plain functions.

* a ``torch.export`` archive is rebuilt from its ATen graph (:func:`rebuild_exported`);
* an ONNX model is converted by :mod:`tinymlaas.formats.onnx_to_torch`.

After training, :func:`save_exported` writes a ``torch.export`` archive with a dynamic
batch dimension, so the result chains into ``export-onnx`` and every ONNX step.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import fx, nn

from tinymlaas.domain import ArtifactKind, Task, TensorSpec
from tinymlaas.errors import InvalidInputError, UnsupportedModelError
from tinymlaas.formats.torch_models import load_exported_program
from tinymlaas.transformers.base import Params, StepContext

__all__ = ["TRAINABLE_KINDS", "TrainParams", "TrainingData", "count_macs", "count_parameters",
           "evaluate_accuracy", "fine_tune", "load_trainable", "prunable_layers",
           "rebuild_exported", "save_exported", "training_data"]

#: Artifact kinds a training step can start from.
TRAINABLE_KINDS = frozenset({ArtifactKind.torch_exported, ArtifactKind.onnx})

_aten = torch.ops.aten


class TrainParams(Params):
    """Fine-tuning settings shared by every training step."""

    epochs: int = Field(default=5, ge=0, le=1000, description="Fine-tuning epochs over the "
                        "train split (0: no fine-tuning).")
    lr: float = Field(default=1e-3, gt=0, le=1.0, description="Adam learning rate.")
    batch_size: int = Field(default=64, ge=1, le=8192, description="Training batch size.")
    seed: int = Field(default=0, ge=0, le=2**32 - 1,
                      description="Seed of shuffling and initialisation.")


# loading ---------------------------------------------------------------------------------


def _get_attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _module_name(weight_target: str, taken: set[str]) -> str:
    base = weight_target.rsplit(".", 1)[0] if "." in weight_target else weight_target
    name = base.replace(".", "_") or "layer"
    unique, i = name, 1
    while unique in taken:
        unique, i = f"{name}_{i}", i + 1
    taken.add(unique)
    return unique


def _shape(node: Any) -> list[Any] | None:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    return list(value.shape) if isinstance(value, torch.Tensor) else None


def _conv_module(weight: Any, bias: Any, stride: Any, padding: Any,
                 dilation: Any, groups: int) -> nn.Module:
    dims = weight.dim() - 2
    cls: Any = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}.get(dims)
    if cls is None:
        raise UnsupportedModelError(f"convolution with a {weight.dim()}-d weight is not "
                                    "supported for training")
    out_ch, in_per_group = weight.shape[:2]
    conv: Any = cls(in_per_group * groups, out_ch, tuple(weight.shape[2:]), stride=stride,
               padding=padding, dilation=dilation, groups=groups, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _linear_module(weight: Any, bias: Any) -> nn.Linear:
    linear: Any = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _batch_norm_module(rank: int | None, weight: Any, bias: Any, mean: Any, var: Any,
                       momentum: float, eps: float) -> nn.Module:
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 5: nn.BatchNorm3d}.get(rank or 4, nn.BatchNorm2d)
    bn: Any = cls(mean.shape[0], eps=eps, momentum=momentum, affine=weight is not None)
    with torch.no_grad():
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        if weight is not None:
            bn.weight.copy_(weight)
            bn.bias.copy_(bias if bias is not None else torch.zeros_like(weight))
    return bn


class _Builder:
    """Emits a new FX graph whose owned tensors live on one root module."""

    def __init__(self) -> None:
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.names: set[str] = set()

    def module(self, hint: str, module: nn.Module, *args: Any) -> fx.Node:
        name = _module_name(hint, self.names)
        self.root.add_module(name, module)
        return self.graph.call_module(name, tuple(args))

    def tensor(self, hint: str, value: torch.Tensor, trainable: bool) -> fx.Node:
        name = _module_name(hint + ".t", self.names)
        if trainable and value.is_floating_point():
            self.root.register_parameter(name, nn.Parameter(value.detach().clone()))
        else:
            self.root.register_buffer(name, value.detach().clone())
        return self.graph.get_attr(name)

    def finish(self) -> fx.GraphModule:
        gm = fx.GraphModule(self.root, self.graph)
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
        return gm


def _is_flatten(src: list[Any] | None, dst: list[Any] | None) -> bool:
    """A reshape that keeps the batch dimension and folds the rest into one."""
    if not src or not dst or len(src) <= 2 or len(dst) != 2:
        return False
    return str(src[0]) == str(dst[0])


def rebuild_exported(path: Path) -> fx.GraphModule:
    """A trainable module from a ``torch.export`` archive.

    Walks the archive's ATen graph and turns ``conv*``, ``linear`` and ``batch_norm`` calls
    on stored weights into real modules; flattening reshapes become ``torch.flatten`` so
    channel counts can change. Other operations are kept as they are.
    """
    try:
        source = load_exported_program(path).module()
    except Exception as exc:
        raise UnsupportedModelError(f"cannot load {path.name} as a torch.export archive: "
                                    f"{str(exc).strip().splitlines()[0][:300]}") from exc
    params = {name for name, _ in source.named_parameters()}
    builder = _Builder()
    env: dict[fx.Node, Any] = {}
    constants: dict[fx.Node, str] = {}
    tuple_outputs: dict[fx.Node, fx.Node] = {}

    def value(arg: Any) -> Any:
        if isinstance(arg, fx.Node):
            if arg in constants and arg not in env:
                target = constants[arg]
                env[arg] = builder.tensor(target, _get_attr(source, target), target in params)
            return env[arg]
        if isinstance(arg, (list, tuple)):
            return type(arg)(value(a) for a in arg)
        if isinstance(arg, dict):
            return {k: value(v) for k, v in arg.items()}
        return arg

    def tensor_of(arg: Any) -> Any:
        return None if arg is None else _get_attr(source, constants[arg])

    def owned(*args: Any) -> bool:
        return all(a is None or (isinstance(a, fx.Node) and a in constants) for a in args)

    for node in source.graph.nodes:
        if node.op == "get_attr":
            constants[node] = node.target
            continue
        if node.op == "call_module":  # the input-guard module of unflattened programs
            continue
        if node.op == "placeholder":
            env[node] = builder.graph.placeholder(node.target)
            env[node].meta = dict(node.meta)
            continue
        if node.op == "output":
            result = value(node.args[0])
            if isinstance(result, (tuple, list)) and len(result) == 1:
                result = result[0]  # one output: return the tensor, as the source module did
            builder.graph.output(result)
            continue
        target, args = node.target, list(node.args) + [None] * 9
        if target in (_aten.conv1d.default, _aten.conv2d.default, _aten.conv3d.default,
                      _aten.conv2d.padding, _aten.conv1d.padding) and owned(args[1], args[2]):
            weight = tensor_of(args[1])
            dims = weight.dim() - 2
            stride = args[3] if args[3] is not None else [1] * dims
            padding = args[4] if args[4] is not None else [0] * dims
            dilation = args[5] if args[5] is not None else [1] * dims
            module = _conv_module(weight, tensor_of(args[2]), stride, padding, dilation,
                                  int(args[6] or 1))
            env[node] = builder.module(constants[args[1]], module, value(args[0]))
        elif target is _aten.linear.default and owned(args[1], args[2]):
            module = _linear_module(tensor_of(args[1]), tensor_of(args[2]))
            env[node] = builder.module(constants[args[1]], module, value(args[0]))
        elif target in (_aten.batch_norm.default,
                        _aten._native_batch_norm_legit_no_training.default) and \
                owned(*args[1:5]):
            no_training = target is _aten._native_batch_norm_legit_no_training.default
            momentum, eps = (args[5], args[6]) if no_training else (args[6], args[7])
            rank = len(_shape(args[0]) or []) or None
            module = _batch_norm_module(rank, tensor_of(args[1]), tensor_of(args[2]),
                                        tensor_of(args[3]), tensor_of(args[4]),
                                        float(momentum or 0.1), float(eps or 1e-5))
            hint = constants[args[3]].removesuffix(".running_mean")
            out = builder.module(hint + ".bn", module, value(args[0]))
            if no_training:
                tuple_outputs[node] = out
            env[node] = out
        elif target is operator.getitem and node.args[0] in tuple_outputs:
            env[node] = tuple_outputs[node.args[0]]
        elif target in (_aten.view.default, _aten.reshape.default, _aten._unsafe_view.default,
                        _aten.flatten.using_ints) and \
                _is_flatten(_shape(node.args[0]), _shape(node)):
            env[node] = builder.graph.call_function(torch.flatten, (value(node.args[0]), 1))
        elif target in (_aten.dropout.default, _aten.alpha_dropout.default):
            env[node] = value(node.args[0])
        else:
            env[node] = builder.graph.call_function(target, value(tuple(node.args)),
                                                    value(dict(node.kwargs)))
            env[node].meta = dict(node.meta)
    return builder.finish()


def load_trainable(path: Path, kind: ArtifactKind) -> fx.GraphModule:
    """A trainable module from a model artifact (``torch-exported`` or ``onnx``)."""
    if kind is ArtifactKind.torch_exported:
        module = rebuild_exported(path)
    elif kind is ArtifactKind.onnx:
        from tinymlaas.formats.onnx_to_torch import onnx_to_torch

        module = onnx_to_torch(path)
    else:
        raise InvalidInputError(f"training steps take a torch.export archive or an ONNX "
                                f"model, not {kind}")
    module.eval()
    return module


def sample_shape(specs: list[TensorSpec], path: Path, kind: ArtifactKind) -> list[int]:
    """One sample's input shape (no batch dimension)."""
    if not specs:
        if kind is ArtifactKind.onnx:
            import onnx

            from tinymlaas.formats.models import onnx_tensor_specs

            model = onnx.load(str(path), load_external_data=False)
            init = {i.name for i in model.graph.initializer}
            specs = onnx_tensor_specs([i for i in model.graph.input if i.name not in init])
        else:
            from tinymlaas.formats.torch_models import example_inputs

            specs = example_inputs(path, kind)
    dims = specs[0].shape[1:]
    if any(not isinstance(d, int) or d <= 0 for d in dims):
        raise UnsupportedModelError(f"the model input {specs[0].shape} has free dimensions "
                                    "beyond the batch; training steps need a fixed sample shape")
    return [int(d) for d in dims]


# data --------------------------------------------------------------------------------------


class TrainingData:
    """Train split tensors, shaped for the model, and the task's loss."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, task: Task) -> None:
        self.X = X
        self.y = y
        self.task = task

    def __len__(self) -> int:
        return len(self.X)


def training_data(ctx: StepContext, shape: list[int],
                  split: str = "train") -> TrainingData:
    """The dataset's ``split`` fitted to the model input ``shape``."""
    from tinymlaas.evaluation.runtime import fit_to_input

    dataset = ctx.require_dataset()
    X, y = dataset.split(split)  # type: ignore[arg-type]
    if len(X) == 0:
        raise InvalidInputError(f"the dataset's {split} split is empty")
    X = fit_to_input(X, [-1, *shape])
    target = torch.from_numpy(np.asarray(y))
    target = target.long() if dataset.task is Task.classification else target.float()
    return TrainingData(torch.from_numpy(np.ascontiguousarray(X)), target, dataset.task)


def _task_loss(task: Task, outputs: torch.Tensor, y: torch.Tensor,
               reference: torch.Tensor | None) -> torch.Tensor:
    if task is Task.classification:
        return nn.functional.cross_entropy(outputs.reshape(len(outputs), -1), y)
    if task is Task.regression:
        return nn.functional.mse_loss(outputs.reshape(y.shape) if outputs.numel() == y.numel()
                                      else outputs, y)
    if reference is None:
        raise UnsupportedModelError(f"fine-tuning a {task.value} model needs a reference model "
                                    "to match")
    return nn.functional.mse_loss(outputs, reference)


def distillation_loss(student: torch.Tensor, teacher: Any, temperature: float,
                      task: Task) -> torch.Tensor:
    """Soft-target KL divergence (classification) or output MSE (other tasks)."""
    if task is Task.classification:
        s = nn.functional.log_softmax(student.reshape(len(student), -1) / temperature, dim=1)
        t = nn.functional.softmax(teacher.reshape(len(teacher), -1) / temperature, dim=1)
        return nn.functional.kl_div(s, t, reduction="batchmean") * temperature ** 2
    return nn.functional.mse_loss(student, teacher)


def fine_tune(model: nn.Module, data: TrainingData, params: TrainParams, ctx: StepContext, *,
              teacher: nn.Module | None = None, temperature: float = 4.0, alpha: float = 0.0,
              after_step: Callable[[], None] | None = None,
              span: tuple[float, float] = (0.1, 0.9), label: str = "fine-tuning",
              set_mode: Callable[[bool], None] | None = None) -> list[float]:
    """Train ``model`` in place on ``data``; returns the mean loss of each epoch.

    With a ``teacher``, the loss is ``alpha * distillation + (1 - alpha) * task loss``; for
    tasks without labels the teacher's outputs are the target. ``after_step`` runs after
    every optimiser step (e.g. to re-apply pruning masks); ``set_mode`` replaces
    ``model.train(flag)`` for graphs that switch modes differently (exported programs).
    """
    switch: Callable[[bool], Any] = set_mode or model.train
    torch.manual_seed(params.seed)
    if params.epochs == 0:
        return []
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=params.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=params.epochs * math.ceil(len(data) / params.batch_size))
    generator = torch.Generator().manual_seed(params.seed)
    losses = []
    if teacher is not None:
        teacher.eval()
    for epoch in range(params.epochs):
        switch(True)
        order = torch.randperm(len(data), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(order), params.batch_size):
            index = order[start:start + params.batch_size]
            if len(index) < 2 and len(order) > 1:
                continue  # batch norm cannot train on a single sample
            x, y = data.X[index], data.y[index]
            reference = None
            if teacher is not None:
                with torch.no_grad():
                    reference = teacher(x)
            outputs = model(x)
            outputs = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
            if teacher is not None and data.task is Task.classification:
                loss = alpha * distillation_loss(outputs, reference, temperature, data.task) + \
                    (1 - alpha) * _task_loss(data.task, outputs, y, reference)
            else:
                loss = _task_loss(data.task, outputs, y, reference)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach())
            batches += 1
        losses.append(total / max(1, batches))
        ctx.progress(span[0] + (span[1] - span[0]) * (epoch + 1) / params.epochs,
                     f"{label}: epoch {epoch + 1}/{params.epochs}, loss {losses[-1]:.4f}")
        ctx.log.info("%s epoch %d loss %.5f", label, epoch + 1, losses[-1])
    switch(False)
    return losses


def evaluate_accuracy(model: nn.Module, data: TrainingData,
                      set_mode: Callable[[bool], None] | None = None) -> float | None:
    """Top-1 accuracy in percent on ``data`` (classification only)."""
    if data.task is not Task.classification:
        return None
    (set_mode or model.train)(False)
    with torch.no_grad():
        correct = sum(int((model(data.X[i:i + 512]).reshape(len(data.X[i:i + 512]), -1)
                           .argmax(1) == data.y[i:i + 512]).sum())
                      for i in range(0, len(data), 512))
    return 100.0 * correct / len(data)


# measuring and saving ------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: nn.Module, shape: list[int]) -> int:
    """Multiply-accumulates of one sample (PyTorch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    model.train(was_training)
    return int(counter.get_total_flops() // 2)


def prunable_layers(model: nn.Module) -> dict[str, Any]:
    """Convolution and linear layers by name."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))}


def save_exported(model: nn.Module, shape: list[int], target: Path) -> Path:
    """Save ``model`` as a ``torch.export`` archive with a dynamic batch dimension."""
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.export.export(model, (torch.zeros(2, *shape),),
                                      dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise UnsupportedModelError(f"torch.export of the result failed: "
                                    f"{str(exc).strip().splitlines()[0][:300]}") from exc
    torch.export.save(program, str(target))
    return target


# the base of the training steps ----------------------------------------------------------------


def output_layers(model: fx.GraphModule) -> list[nn.Module]:
    """The convolution or linear layers whose outputs reach the model output unchanged in
    width (they fix the number of classes, so pruning must leave them alone)."""
    layers = prunable_layers(model)
    found: list[nn.Module] = []
    output = next(n for n in model.graph.nodes if n.op == "output")
    pending = list(output.all_input_nodes)
    seen: set[fx.Node] = set()
    while pending:
        node = pending.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module" and node.target in layers:
            found.append(layers[node.target])
            continue
        pending.extend(n for n in node.all_input_nodes if n.op != "get_attr")
    return found


class TrainingStep:
    """Mixin with the load / measure / save frame shared by the training transformers.

    Subclasses implement ``transform(ctx, model, data, shape) -> (model, metrics)``.
    """

    accepts: ClassVar[frozenset[ArtifactKind]] = TRAINABLE_KINDS
    produces: ClassVar[ArtifactKind] = ArtifactKind.torch_exported
    needs: ClassVar[Literal["none", "calibration", "train"]] = "train"

    def transform(self, ctx: StepContext, model: fx.GraphModule, data: TrainingData,
                  shape: list[int]) -> tuple[nn.Module, dict[str, Any]]:
        raise NotImplementedError

    def run(self, ctx: StepContext) -> Any:
        from tinymlaas.transformers.base import StepOutput

        torch.manual_seed(getattr(ctx.params, "seed", 0))
        ctx.progress(0.02, "loading the model")
        model = load_trainable(ctx.input_path, ctx.input_kind)
        shape = sample_shape(ctx.input_specs, ctx.input_path, ctx.input_kind)
        data = training_data(ctx, shape)
        before = {"parameters_before": count_parameters(model),
                  "macs_before": count_macs(model, shape)}
        result, metrics = self.transform(ctx, model, data, shape)
        ctx.progress(0.95, "exporting")
        out = save_exported(result, shape, ctx.out_dir / "model.pt2")
        after = {"parameters_after": count_parameters(result),
                 "macs_after": count_macs(result, shape)}
        summary = {**before, **after,
                   "parameter_ratio": after["parameters_after"]
                   / max(1, before["parameters_before"]),
                   "mac_ratio": after["macs_after"] / max(1, before["macs_before"]),
                   "train_accuracy": evaluate_accuracy(result, data), **metrics}
        ctx.log.info("%s", summary)
        return StepOutput(out, ArtifactKind.torch_exported, summary)
