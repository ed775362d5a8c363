"""``quantize-dynamic`` and ``quantize-static``: int8 post-training quantization (ONNX Runtime)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
from pydantic import Field

from tinymlaas.evaluation.runtime import fixed_batch, input_feed, pad_batch
from tinymlaas.formats.models import onnx_tensor_specs
from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer


class KeepFloat(Params):
    nodes_to_exclude: list[str] = Field(default_factory=list,
                                        description="Node names to keep in float.")
    op_types_to_exclude: list[str] = Field(default_factory=list,
                                           description="Op types to keep in float, e.g. [Gemm].")


def _op_types_to_quantize(model: onnx.ModelProto, exclude: list[str]) -> list[str] | None:
    if not exclude:
        return None
    return sorted({n.op_type for n in model.graph.node} - set(exclude))


def _preprocess(ctx: StepContext) -> str:
    """Shape inference and ORT's recommended pre-processing, falling back to the input.

    Stale ``value_info`` from exporters can contradict the shapes the quantizer infers after
    it rewrites weights, so it is dropped first and inferred afresh.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(ctx.input_path))
    del model.graph.value_info[:]
    clean = ctx.work_dir / "clean.onnx"
    onnx.save(model, str(clean))
    target = ctx.work_dir / "preprocessed.onnx"
    try:
        quant_pre_process(str(clean), str(target), skip_symbolic_shape=True)
        return str(target)
    except Exception as exc:  # pre-processing is an optimisation; quantize the input as is
        ctx.log.warning("pre-processing skipped: %s", str(exc).splitlines()[0][:200])
        return str(clean)


class DynamicParams(KeepFloat):
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = Field(default=True, description="One scale per output channel of "
                              "each weight (keeps transformers close to fp32) or one per "
                              "tensor.")
    reduce_range: bool = Field(default=True, description="Int8 weights in 7 bits: x86 CPUs "
                               "without VNNI (AVX2) multiply uint8 activations by int8 weights "
                               "in 16-bit sums that saturate on full-range weights.")


class QuantizeDynamic(Transformer):
    name = "quantize-dynamic"
    version = "1"
    summary = "Int8 weights, activations quantized on the fly (best for MatMul-heavy models)."
    Params = DynamicParams

    def run(self, ctx: StepContext) -> StepOutput:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        params: DynamicParams = ctx.params
        source = _preprocess(ctx)
        out = ctx.out_dir / "model.onnx"
        ctx.progress(0.3, "quantizing weights")
        quantize_dynamic(
            source, str(out),
            weight_type=QuantType.QInt8 if params.weight_type == "int8" else QuantType.QUInt8,
            per_channel=params.per_channel,
            reduce_range=params.reduce_range,
            nodes_to_exclude=params.nodes_to_exclude or None,
            op_types_to_quantize=_op_types_to_quantize(onnx.load(source),
                                                       params.op_types_to_exclude),
        )
        return StepOutput(out, self.produces)


class StaticParams(KeepFloat):
    format: Literal["qdq", "qoperator"] = Field(
        default="qdq", description="QDQ (Q/DQ pairs around float ops; portable, what "
        "compilers read) or QOperator (QLinearConv etc.).")
    per_channel: bool = Field(default=True, description="One scale per output channel of "
                              "each weight (more accurate) or one per tensor.")
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    num_samples: int = Field(default=256, gt=0, le=100_000,
                             description="Calibration samples, from the calibration split.")
    activation_type: Literal["int8", "uint8"] = "int8"
    weight_type: Literal["int8", "uint8"] = "int8"
    symmetric_activations: bool = False


class _Reader:
    """ONNX Runtime's calibration data reader over the calibration split: a feed of every
    input, one sample at a time (or the model's fixed batch, the last one padded)."""

    def __init__(self, feed: dict[str, np.ndarray], ctx: StepContext, batch: int = 1) -> None:
        self._feed = pad_batch(feed, batch)
        self._batch = batch
        self._count = len(next(iter(self._feed.values())))
        self._seen = 0
        self._ctx = ctx

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._seen >= self._count:
            return None
        i = self._seen
        self._seen += self._batch
        if (self._seen // self._batch) % 32 == 0:
            self._ctx.progress(0.1 + 0.7 * self._seen / self._count,
                               f"calibrating {self._seen}/{self._count}")
        return {name: array[i:i + self._batch] for name, array in self._feed.items()}

    def rewind(self) -> None:  # pragma: no cover - part of ORT's reader protocol
        pass


class QuantizeStatic(Transformer):
    name = "quantize-static"
    version = "1"
    summary = "Int8 weights and activations, ranges calibrated on the calibration split."
    Params = StaticParams
    needs = "calibration"

    def run(self, ctx: StepContext) -> StepOutput:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        params: StaticParams = ctx.params
        source = _preprocess(ctx)
        model = onnx.load(source)
        init = {i.name for i in model.graph.initializer}
        specs = onnx_tensor_specs([i for i in model.graph.input if i.name not in init])
        X, _ = ctx.require_dataset().split("calibration")
        samples = X[: params.num_samples]
        feed = input_feed(samples, specs)
        ctx.log.info("calibrating on %d samples with %s", len(samples), params.calibration)
        types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        out = ctx.out_dir / "model.onnx"
        quantize_static(
            source, str(out), _Reader(feed, ctx, fixed_batch(specs)),
            quant_format=QuantFormat.QDQ if params.format == "qdq" else QuantFormat.QOperator,
            per_channel=params.per_channel,
            activation_type=types[params.activation_type],
            weight_type=types[params.weight_type],
            calibrate_method={"minmax": CalibrationMethod.MinMax,
                              "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[params.calibration],
            nodes_to_exclude=params.nodes_to_exclude or None,
            op_types_to_quantize=_op_types_to_quantize(model, params.op_types_to_exclude),
            extra_options={"ActivationSymmetric": params.symmetric_activations},
        )
        return StepOutput(out, self.produces, {"calibration_samples": len(samples)})
