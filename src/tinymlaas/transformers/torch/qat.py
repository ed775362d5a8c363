"""``qat``: quantization-aware training with torchao PT2E, exported to int8 QDQ ONNX.

The model is captured with ``torch.export``, prepared for QAT with torchao's X86 quantizer
(int8 symmetric per-channel weights, uint8 asymmetric activations, batch norm folded into
the convolutions), fine-tuned with fake quantization on the train split, converted, and
exported to ONNX: QuantizeLinear/DequantizeLinear pairs with int8 weights, which ONNX
Runtime runs as integer kernels and which the compiler reads like a ``quantize-static``
output.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
from pydantic import Field

from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import UnsupportedModelError
from tinymlaas.transformers.base import StepContext, StepOutput, Transformer
from tinymlaas.transformers.torch.training import (
    TRAINABLE_KINDS,
    TrainParams,
    count_parameters,
    evaluate_accuracy,
    fine_tune,
    load_trainable,
    sample_shape,
    training_data,
)

__all__ = ["Qat", "QatParams", "int8_summary"]


class QatParams(TrainParams):
    epochs: int = Field(default=3, ge=1, le=1000, description="QAT epochs.")
    lr: float = Field(default=1e-4, gt=0, le=1.0, description="Adam learning rate (small: "
                      "the model is already trained).")
    opset: int = Field(default=18, ge=13, le=23, description="ONNX opset version.")


def int8_summary(model: onnx.ModelProto) -> dict[str, Any]:
    """Counts of Q/DQ nodes and bytes of integer versus float initializers."""
    from onnx import numpy_helper

    int_bytes = float_bytes = 0
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype in (np.int8, np.uint8):
            int_bytes += array.nbytes
        elif np.issubdtype(array.dtype, np.floating):
            float_bytes += array.nbytes
    ops = [n.op_type for n in model.graph.node]
    return {"quantize_nodes": ops.count("QuantizeLinear"),
            "dequantize_nodes": ops.count("DequantizeLinear"),
            "int8_weight_bytes": int_bytes, "float_weight_bytes": float_bytes}


def _strip_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node debug metadata (stack traces), a third of the file."""
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]


class Qat(Transformer):
    name = "qat"
    version = "1"
    summary = ("Quantization-aware training (torchao PT2E, X86 int8 scheme) exported to int8 "
               "QDQ ONNX.")
    Params = QatParams
    accepts = TRAINABLE_KINDS
    produces = ArtifactKind.onnx
    needs = "train"

    def run(self, ctx: StepContext) -> StepOutput:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
        from torchao.quantization.pt2e import (
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

        params: QatParams = ctx.params
        torch.manual_seed(params.seed)
        ctx.progress(0.02, "loading the model")
        model = load_trainable(ctx.input_path, ctx.input_kind)
        shape = sample_shape(ctx.input_specs, ctx.input_path, ctx.input_kind)
        data = training_data(ctx, shape)
        parameters = count_parameters(model)
        example = (torch.zeros(2, *shape),)
        dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        ctx.progress(0.05, "preparing fake quantization")
        try:
            captured = torch.export.export(model, example, dynamic_shapes=dynamic).module()
            quantizer = x86.X86InductorQuantizer()
            quantizer.set_global(x86.get_default_x86_inductor_quantization_config(is_qat=True))
            prepared = prepare_qat_pt2e(captured, quantizer)
        except Exception as exc:
            raise UnsupportedModelError(f"QAT preparation failed: "
                                        f"{str(exc).strip().splitlines()[0][:300]}") from exc

        def set_mode(training: bool) -> None:
            (move_exported_model_to_train if training else move_exported_model_to_eval)(prepared)

        fine_tune(prepared, data, params, ctx, span=(0.1, 0.85), label="QAT",
                  set_mode=set_mode)
        train_accuracy = evaluate_accuracy(prepared, data, set_mode)
        ctx.progress(0.88, "converting to int8")
        converted = convert_pt2e(prepared)
        out = ctx.out_dir / "model.onnx"
        ctx.progress(0.92, "exporting to ONNX")
        try:
            torch.onnx.export(converted, example, str(out), opset_version=params.opset,
                              dynamo=True, external_data=False, dynamic_shapes=dynamic,
                              input_names=["input"], output_names=["output"], verbose=False)
        except Exception as exc:
            raise UnsupportedModelError(f"exporting the quantized model to ONNX failed: "
                                        f"{str(exc).strip().splitlines()[0][:300]}") from exc
        exported = onnx.load(str(out))
        _strip_metadata(exported)
        onnx.save(exported, str(out))
        summary = int8_summary(exported)
        if summary["quantize_nodes"] == 0 or summary["int8_weight_bytes"] == 0:
            raise UnsupportedModelError("the exported model holds no int8 weights; the "
                                        "quantizer found no layer it supports")
        return StepOutput(out, ArtifactKind.onnx, {
            "parameters": parameters, "train_accuracy": train_accuracy, **summary})
