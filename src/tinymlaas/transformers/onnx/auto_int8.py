"""``auto-int8``: the int8 recipe that suits the graph, chosen from its operators.

Conv nets and small MLPs quantize well with static QDQ: activation ranges are calibrated
once and every layer runs in int8 (and compilers for microcontrollers read QDQ). Transformers
do not: attention scores and LayerNorm outputs have a few outlier channels, and one
calibrated range per tensor either clips them or wastes the int8 grid on them. For those
graphs dynamic quantization with one weight scale per output channel keeps the outputs
close to fp32: weights are int8, each activation's range is measured at run time, and
Softmax, LayerNormalization and the attention-score MatMuls stay in float.

``strategy: static`` on a transformer keeps those sensitive nodes in float too, so both
recipes can be compared on the same model (``bench/models.py`` does).

Before dynamic int8 the activations' outlier channels are smoothed into the weights
(:mod:`tinymlaas.transformers.onnx.smooth`). How much to move depends on the model, so each
``smooth_alphas`` candidate, and no smoothing, is quantized and scored by its outputs' cosine
to the float model on the calibration split; the closest one is kept.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Literal

import onnx
from pydantic import BaseModel, Field, field_validator

from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer
from tinymlaas.transformers.onnx.quantize import (
    DynamicParams,
    QuantizeDynamic,
    QuantizeStatic,
    StaticParams,
)
from tinymlaas.transformers.onnx.smooth import activation_maxima, smooth, smoothable_groups

__all__ = ["AutoInt8", "AutoInt8Params", "GraphProfile", "graph_profile"]

#: Calibration samples that measure activation ranges and score the smoothing candidates.
_SMOOTH_SAMPLES = 64

#: Ops whose outputs have outlier channels or a wide dynamic range; static int8 keeps them
#: in float on transformer graphs.
SENSITIVE_OPS = ("Softmax", "LayerNormalization")


class AutoInt8Params(Params):
    strategy: Literal["auto", "static", "dynamic"] = Field(
        default="auto", description="`auto` picks by graph: static QDQ for conv nets and "
        "MLPs, dynamic per-channel for transformers; `static` or `dynamic` force one.")
    per_channel: bool = Field(default=True, description="One weight scale per output "
                              "channel (both strategies).")
    num_samples: int = Field(default=256, gt=0, le=100_000,
                             description="Calibration samples for the static strategy.")
    nodes_to_exclude: list[str] = Field(default_factory=list,
                                        description="Further node names to keep in float.")
    smooth_alphas: list[float] = Field(
        default=[0.6, 0.8], max_length=8, description="Dynamic strategy: the activation "
        "smoothing strengths to try (0 to 1: the share of each activation channel's range "
        "moved into the weights); the one whose int8 outputs are closest to the float "
        "model's on the calibration split is kept, no smoothing included. [] turns it off.")

    @field_validator("smooth_alphas")
    @classmethod
    def _alphas_in_range(cls, alphas: list[float]) -> list[float]:
        if any(not 0.0 < a <= 1.0 for a in alphas):
            raise ValueError("each smoothing strength is in (0, 1]")
        return alphas


class GraphProfile(BaseModel):
    """Operator counts that decide the recipe."""

    conv: int
    weight_matmuls: int
    activation_matmuls: int
    layernorms: int
    softmaxes: int
    embeddings: int

    @property
    def transformer_like(self) -> bool:
        """MatMul-heavy with attention or LayerNorm: what a transformer block looks like."""
        matmuls = self.weight_matmuls + self.activation_matmuls
        return matmuls > self.conv and (self.activation_matmuls > 0 or self.layernorms > 0)

    def describe(self) -> str:
        return (f"{self.weight_matmuls} MatMul/Gemm with weights, {self.activation_matmuls} "
                f"activation x activation MatMul (attention), {self.layernorms} "
                f"LayerNormalization, {self.softmaxes} Softmax, {self.conv} Conv")


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    """Initializers and what Constant or DequantizeLinear-of-initializer nodes make."""
    names = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.op_type == "DequantizeLinear"
                                          and node.input[0] in names):
            names.update(node.output)
    return names


def activation_matmuls(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """MatMuls of two activations: in a transformer, the attention scores (Q·Kᵀ) and the
    context (scores·V)."""
    constants = _constant_names(graph)
    return [n for n in graph.node if n.op_type == "MatMul"
            and not any(i in constants for i in n.input)]


def graph_profile(model: onnx.ModelProto) -> GraphProfile:
    graph = model.graph
    ops = Counter(n.op_type for n in graph.node)
    constants = _constant_names(graph)
    weight_matmuls = sum(1 for n in graph.node if n.op_type in {"MatMul", "Gemm"}
                         and any(i in constants for i in n.input))
    embeddings = sum(1 for n in graph.node if n.op_type == "Gather"
                     and n.input[0] in {i.name for i in graph.initializer})
    return GraphProfile(conv=ops["Conv"] + ops["ConvTranspose"],
                        weight_matmuls=weight_matmuls,
                        activation_matmuls=len(activation_matmuls(graph)),
                        layernorms=ops["LayerNormalization"], softmaxes=ops["Softmax"],
                        embeddings=embeddings)


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name: quantizers exclude nodes by name."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    return model


class AutoInt8(Transformer):
    name = "auto-int8"
    version = "2"
    summary = ("Int8 with the recipe that suits the graph: static QDQ for conv nets, dynamic "
               "per-channel for transformers.")
    Params = AutoInt8Params
    needs = "calibration"

    def run(self, ctx: StepContext) -> StepOutput:
        params: AutoInt8Params = ctx.params
        model = _named(onnx.load(str(ctx.input_path)))
        profile = graph_profile(model)
        if params.strategy != "auto":
            strategy = params.strategy
            reason = f"strategy {strategy} requested; graph: {profile.describe()}"
        elif profile.transformer_like:
            strategy = "dynamic"
            reason = (f"transformer-like graph ({profile.describe()}): dynamic int8 with "
                      "per-channel weights, activation ranges measured at run time")
        else:
            strategy = "static"
            reason = (f"conv/MLP graph ({profile.describe()}): static QDQ int8, activation "
                      "ranges calibrated on the data")
        ctx.log.info("auto-int8: %s", reason)
        named = ctx.work_dir / "named.onnx"
        onnx.save(model, str(named))
        excluded = list(params.nodes_to_exclude)
        if strategy == "static" and profile.transformer_like:
            excluded += [n.name for n in model.graph.node if n.op_type in SENSITIVE_OPS]
            excluded += [n.name for n in activation_matmuls(model.graph)]
        if strategy == "dynamic":
            output = _smoothed_dynamic(ctx, model, named, DynamicParams(
                per_channel=params.per_channel, nodes_to_exclude=excluded),
                params.smooth_alphas)
        else:
            output = _moved(_quantize(ctx, QuantizeStatic(), named, StaticParams(
                per_channel=params.per_channel, num_samples=params.num_samples,
                nodes_to_exclude=excluded), ctx.work_dir / strategy), ctx)
        output.metrics.update({
            "strategy": strategy, "reason": reason, "op_counts": profile.model_dump(),
            "kept_float": len(excluded) - len(params.nodes_to_exclude)})
        return output


def _quantize(ctx: StepContext, inner: Transformer, source: Path, params: Params, work: Path
              ) -> StepOutput:
    work.mkdir(parents=True, exist_ok=True)
    return inner.run(dataclasses.replace(ctx, input_path=source, params=params, work_dir=work,
                                         out_dir=work))


def _smoothed_dynamic(ctx: StepContext, model: onnx.ModelProto, named: Path,
                      params: DynamicParams, alphas: list[float]) -> StepOutput:
    """Dynamic int8 of ``model`` as is and smoothed with each of the ``alphas``; the one
    whose outputs on the calibration split are closest to the float model's is moved to
    the step's output (no smoothing without a MatMul to smooth or calibration samples)."""
    from tinymlaas.evaluation.evaluate import cosines, token_mask
    from tinymlaas.evaluation.runtime import OnnxRunner, fixed_batch

    dataset = ctx.dataset
    groups = smoothable_groups(model) if alphas and dataset is not None else {}
    X = dataset.split("calibration")[0][:_SMOOTH_SAMPLES] if dataset and groups else None
    if X is None or not len(X):
        output = _quantize(ctx, QuantizeDynamic(), named, params, ctx.work_dir / "dynamic")
        return _moved(output, ctx)
    runner = OnnxRunner(named)
    feed = runner.prepare(X)
    count = len(next(iter(feed.values())))
    batch = fixed_batch(runner.inputs)
    step = batch if batch > 1 else 8
    ctx.progress(0.1, f"activation ranges on {len(X)} calibration samples")
    maxima = activation_maxima(model, [{k: v[i:i + step] for k, v in feed.items()}
                                       for i in range(0, count, step)], list(groups))
    reference = runner.predict(X)
    mask = token_mask(X)
    scores: dict[str, float] = {}
    best: tuple[float, float, StepOutput] | None = None
    for index, alpha in enumerate([0.0, *alphas]):
        ctx.progress(0.2 + 0.7 * index / (len(alphas) + 1),
                     f"int8 with smoothing {alpha:g}" if alpha else "int8 without smoothing")
        work = ctx.work_dir / f"smooth-{alpha:g}"
        source = named
        if alpha:
            work.mkdir(parents=True, exist_ok=True)
            source = work / "smoothed.onnx"
            onnx.save(smooth(model, maxima, alpha), str(source))
        output = _quantize(ctx, QuantizeDynamic(), source, params, work)
        score = float(cosines(OnnxRunner(output.path).predict(X), reference, mask).mean())
        scores[f"{alpha:g}"] = round(score, 6)
        if best is None or score > best[0]:
            best = (score, alpha, output)
    assert best is not None
    ctx.log.info("auto-int8: calibration cosine by smoothing strength %s", scores)
    output = _moved(best[2], ctx)
    output.metrics.update({"smooth_alpha": best[1], "calibration_cosine": scores,
                           "smoothed_groups": len(groups) if best[1] else 0})
    return output


def _moved(output: StepOutput, ctx: StepContext) -> StepOutput:
    """``output`` moved from its work folder to the step's output folder."""
    target = ctx.out_dir / output.path.name
    output.path.replace(target)
    return dataclasses.replace(output, path=target)
