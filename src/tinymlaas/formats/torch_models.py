"""Loading PyTorch models from the safe formats: torch.export archives and TorchScript."""

from __future__ import annotations

from pathlib import Path

import torch

from tinymlaas.domain import ArtifactKind, TensorSpec
from tinymlaas.errors import InvalidInputError, UnsupportedModelError

__all__ = ["example_inputs", "inspect_torch", "load_exported_program", "load_torch_module"]


def load_exported_program(path: Path) -> torch.export.ExportedProgram:
    """Load a ``torch.export`` archive (artifact blobs have no ``.pt2`` suffix)."""
    with path.open("rb") as fh:
        return torch.export.load(fh)


def load_torch_module(path: Path, kind: ArtifactKind) -> torch.nn.Module:
    """A module ready for inference (``eval`` mode)."""
    try:
        if kind is ArtifactKind.torch_exported:
            module = load_exported_program(path).module()
        elif kind is ArtifactKind.torchscript:
            module = torch.jit.load(str(path), map_location="cpu")
        else:
            raise InvalidInputError(f"{kind} is not a PyTorch model kind")
    except InvalidInputError:
        raise
    except Exception as exc:
        raise UnsupportedModelError(f"cannot load {path.name} as {kind}: "
                                    f"{str(exc).strip().splitlines()[0][:300]}") from exc
    if hasattr(module, "eval") and kind is ArtifactKind.torchscript:
        module.eval()
    return module


def example_inputs(path: Path, kind: ArtifactKind,
                   input_shape: list[int] | None = None) -> list[TensorSpec]:
    """Input specs (batch dimension first, named ``N`` when dynamic)."""
    if kind is ArtifactKind.torch_exported:
        program = load_exported_program(path)
        specs = []
        user_inputs = program.graph_signature.user_inputs
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name in user_inputs:
                value = node.meta.get("val")
                shape: list[int | str] = [int(d) if isinstance(d, int) or str(d).isdigit()
                                          else "N" for d in value.shape]
                specs.append(TensorSpec(name=node.name, shape=shape,
                                        dtype=str(value.dtype).removeprefix("torch.")))
        return specs
    if input_shape is None:
        raise InvalidInputError("TorchScript files do not record input shapes; give the input "
                                "shape without the batch dimension (e.g. --input-shape 1,8,8)")
    return [TensorSpec(name="input", shape=["N", *input_shape], dtype="float32")]


def inspect_torch(path: Path, kind: ArtifactKind, input_shape: list[int] | None):
    from tinymlaas.formats.models import ModelInfo

    module = load_torch_module(path, kind)
    inputs = example_inputs(path, kind, input_shape)
    if input_shape is not None and kind is ArtifactKind.torch_exported:
        inputs[0].shape = ["N", *input_shape]
    parameters = sum(int(p.numel()) for p in module.parameters())
    outputs = []
    try:
        with torch.no_grad():
            shape = [1 if isinstance(d, str) else d for d in inputs[0].shape]
            out = module(torch.zeros(shape))
        out = out[0] if isinstance(out, (tuple, list)) else out
        outputs = [TensorSpec(name="output", shape=["N", *list(out.shape[1:])],
                              dtype=str(out.dtype).removeprefix("torch."))]
    except Exception as exc:
        raise UnsupportedModelError(f"{path.name} failed on a zero input of shape "
                                    f"{inputs[0].shape}: {str(exc).splitlines()[0][:300]}") from exc
    return ModelInfo(kind=kind, inputs=inputs, outputs=outputs, parameters=parameters)
