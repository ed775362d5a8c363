"""``fuse``: graph simplification, BatchNorm folding and constant folding (onnxsim)."""

from __future__ import annotations

from typing import Literal

import onnx
from pydantic import Field

from tinymlaas.errors import UnsupportedModelError
from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer


class FuseParams(Params):
    simplify: bool = Field(default=True, description="Run onnxsim: fold constants and "
                           "BatchNorm into convolutions, remove dead and identity nodes.")
    ort_optimization: Literal["none", "basic"] = Field(
        default="basic", description="Then apply ONNX Runtime's basic (standard-op) graph "
        "optimizations and save the result.")


class Fuse(Transformer):
    name = "fuse"
    version = "1"
    summary = "Fold BatchNorm and constants, fuse and simplify the graph (onnxsim + ORT basic)."
    Params = FuseParams

    def run(self, ctx: StepContext) -> StepOutput:
        params: FuseParams = ctx.params
        model = onnx.load(str(ctx.input_path))
        nodes_before = len(model.graph.node)
        if params.simplify:
            import onnxsim

            ctx.progress(0.1, "simplifying with onnxsim")
            try:
                model, ok = onnxsim.simplify(model)
            except Exception as exc:
                raise UnsupportedModelError(f"onnxsim could not simplify the model: "
                                            f"{str(exc).splitlines()[0][:300]}") from exc
            if not ok:
                raise UnsupportedModelError("onnxsim's result does not match the input model")
        out = ctx.out_dir / "model.onnx"
        onnx.save(model, str(out))
        if params.ort_optimization == "basic":
            import onnxruntime as ort

            ctx.progress(0.6, "ONNX Runtime basic optimizations")
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            options.optimized_model_filepath = str(out)
            options.log_severity_level = 3
            ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
        nodes_after = len(onnx.load(str(out)).graph.node)
        ctx.log.info("nodes: %d -> %d", nodes_before, nodes_after)
        return StepOutput(out, self.produces, {"nodes_before": nodes_before,
                                                "nodes_after": nodes_after})
