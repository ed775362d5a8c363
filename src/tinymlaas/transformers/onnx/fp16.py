"""``fp16``: weights and compute in float16, inputs and outputs kept float32."""

from __future__ import annotations

import onnx
from pydantic import Field

from tinymlaas.evaluation.static import topological_sort
from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer


class Float16Params(Params):
    keep_io_types: bool = Field(default=True, description="Keep float32 inputs and outputs.")
    op_block_list: list[str] = Field(default_factory=list,
                                     description="Op types to keep in float32.")


class Float16(Transformer):
    name = "fp16"
    version = "1"
    summary = "Convert weights and arithmetic to float16 (half the weight bytes)."
    Params = Float16Params

    def run(self, ctx: StepContext) -> StepOutput:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        params: Float16Params = ctx.params
        model = onnx.load(str(ctx.input_path))
        converted = convert_float_to_float16(
            model, keep_io_types=params.keep_io_types,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(params.op_block_list)))
        topological_sort(converted.graph)
        out = ctx.out_dir / "model.onnx"
        onnx.save(converted, str(out))
        return StepOutput(out, self.produces)
