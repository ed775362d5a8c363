"""``export-onnx``: a PyTorch model (torch.export archive or TorchScript) to ONNX."""

from __future__ import annotations

from pydantic import Field

from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import UnsupportedModelError
from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer


class ExportParams(Params):
    opset: int = Field(default=18, ge=13, le=23, description="ONNX opset version.")
    dynamic_batch: bool = Field(default=True, description="Leave the batch dimension free "
                                "(torch.export archives keep the dimensions they were exported "
                                "with).")
    optimize: bool = Field(default=True, description="Let the exporter fold constants and "
                           "BatchNorm and drop unused nodes.")


class ExportOnnx(Transformer):
    name = "export-onnx"
    version = "2"  # 2: without the exporter's per-node notes
    summary = "Export a PyTorch model to ONNX (torch.onnx, dynamo exporter, weights inline)."
    Params = ExportParams
    accepts = frozenset({ArtifactKind.torch_exported, ArtifactKind.torchscript})

    def run(self, ctx: StepContext) -> StepOutput:
        import onnx
        import torch

        from tinymlaas.formats.models import strip_node_metadata
        from tinymlaas.formats.torch_models import (
            example_inputs,
            load_exported_program,
            load_torch_module,
        )

        params: ExportParams = ctx.params
        out = ctx.out_dir / "model.onnx"
        ctx.progress(0.2, "exporting")
        try:
            if ctx.input_kind is ArtifactKind.torchscript:
                specs = ctx.input_specs or example_inputs(ctx.input_path, ctx.input_kind)
                shape = [1 if not isinstance(d, int) else d for d in specs[0].shape]
                module = load_torch_module(ctx.input_path, ctx.input_kind)
                torch.onnx.export(module, (torch.zeros(shape),), str(out),
                                  opset_version=params.opset, dynamo=False,
                                  input_names=["input"], output_names=["output"],
                                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}
                                  if params.dynamic_batch else None)
            else:
                program = load_exported_program(ctx.input_path)
                # one input keeps the name "input"; several keep their own (input_ids, ...)
                specs = example_inputs(ctx.input_path, ctx.input_kind)
                names = ["input"] if len(specs) <= 1 else [s.name for s in specs]
                torch.onnx.export(program, (), str(out),
                                  opset_version=params.opset, dynamo=True,
                                  external_data=False, optimize=params.optimize,
                                  input_names=names, output_names=["output"])
        except Exception as exc:
            raise UnsupportedModelError(f"torch.onnx.export failed: "
                                        f"{str(exc).strip().splitlines()[0][:300]}") from exc
        exported = onnx.load(str(out))
        strip_node_metadata(exported.graph)
        onnx.save(exported, str(out))
        return StepOutput(out, self.produces)
