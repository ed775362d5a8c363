"""Loading PyTorch models from the safe formats: torch.export archives and TorchScript.

A ``torch.export`` archive records the Python structure of its inputs and outputs as
pytrees. Outputs are often a Hugging Face ``ModelOutput``, a dict or a tuple; loading such
an archive needs the output's class registered with torch's pytree, which would mean
importing the code that defined it. Instead, every structure type the archive names that
is not registered gets a stand-in (:class:`PytreeNode`) that only keeps its children and
context, so nothing from the file is imported or run. The platform then works on the
flat list of output tensors (:class:`ExportedModule`), named after their place in the
structure (``last_hidden_state``, ``logits``, ``output.1``).
"""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch.export.graph_signature import ConstantArgument, InputKind

from tinymlaas.domain import ArtifactKind, TensorSpec
from tinymlaas.errors import InvalidInputError, UnsupportedModelError

__all__ = ["ExportedModule", "PytreeNode", "example_inputs", "example_tensors", "inspect_torch",
           "load_exported_program", "load_torch_module", "output_tensors"]

#: Spec files inside an archive larger than this are not scanned for structure types.
_MAX_SPEC_BYTES = 64 * 1024**2
_REGISTER_LOCK = threading.Lock()
_TENSOR = object()


class PytreeNode:
    """Stands in for an output structure type the process does not know (a Hugging Face
    ``ModelOutput``, a user's dataclass): its children in order and its context (for a
    ``ModelOutput``, the field names)."""

    serialized_name = ""

    def __init__(self, context: Any, children: list[Any]) -> None:
        self.context = context
        self.children = list(children)

    def names(self) -> list[str]:
        """Field names when the context lists one per child, else positions."""
        context = self.context
        if isinstance(context, str):
            try:
                context = json.loads(context)
            except ValueError:
                context = None
        if isinstance(context, list) and len(context) == len(self.children) \
                and all(isinstance(c, str) for c in context):
            return list(context)
        return [str(i) for i in range(len(self.children))]


def _stand_in(serialized_name: str) -> None:
    """Register a :class:`PytreeNode` subclass under ``serialized_name`` (once)."""
    with _REGISTER_LOCK:
        if serialized_name in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
            return
        short = serialized_name.rsplit(".", 1)[-1]
        cls = type(short if short.isidentifier() else "Node", (PytreeNode,),
                   {"serialized_name": serialized_name})
        pytree.register_pytree_node(
            cls, lambda node: (node.children, node.context),
            lambda children, context, cls=cls: cls(context, list(children)),
            serialized_type_name=serialized_name,
            to_dumpable_context=lambda context: context,
            from_dumpable_context=lambda text: text)


def _spec_types(value: Any, found: set[str]) -> None:
    """Every structure type named in a serialized tree spec (``[protocol, {...}]``)."""
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str):
            found.add(kind)
        for child in value.get("children_spec") or []:
            _spec_types(child, found)
    elif isinstance(value, list):
        for item in value:
            _spec_types(item, found)


def _archive_types(value: Any, found: set[str]) -> None:
    """Walk an archive's JSON for ``in_spec``/``out_spec`` strings and collect their types."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in {"in_spec", "out_spec"} and isinstance(item, str):
                try:
                    _spec_types(json.loads(item), found)
                except ValueError:
                    continue
            else:
                _archive_types(item, found)
    elif isinstance(value, list):
        for item in value:
            _archive_types(item, found)


def _register_unknown_types(path: Path) -> None:
    """Stand-ins for the structure types an archive names that this process lacks."""
    found: set[str] = set()
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".json") or info.file_size > _MAX_SPEC_BYTES:
                    continue
                try:
                    _archive_types(json.loads(archive.read(info)), found)
                except (ValueError, UnicodeDecodeError):
                    continue
    except (zipfile.BadZipFile, OSError):
        return
    for name in sorted(found):
        if name not in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
            _stand_in(name)


def load_exported_program(path: Path) -> torch.export.ExportedProgram:
    """Load a ``torch.export`` archive (artifact blobs have no ``.pt2`` suffix)."""
    _register_unknown_types(path)
    with path.open("rb") as fh:
        return torch.export.load(fh)


def _tensor_leaves(value: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """The tensors in an output structure, in order, named by their place in it."""
    def join(key: str) -> str:
        return f"{prefix}.{key}" if prefix else key

    if isinstance(value, torch.Tensor):
        return [(prefix or "output", value)]
    if isinstance(value, PytreeNode):
        pairs = list(zip(value.names(), value.children, strict=True))
    elif isinstance(value, dict) or callable(getattr(value, "items", None)):
        pairs = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        pairs = list(zip(value._fields, value, strict=True))
    elif isinstance(value, (list, tuple)):
        pairs = [(str(i), v) for i, v in enumerate(value)]
    else:
        return []
    leaves = []
    for key, item in pairs:
        leaves.extend(_tensor_leaves(item, join(key)))
    return leaves


def output_tensors(value: Any) -> list[tuple[str, torch.Tensor]]:
    """The named tensors of a model's output (a tensor, tuple, dict or ``ModelOutput``)."""
    leaves = _tensor_leaves(value)
    if len(leaves) == 1 and leaves[0][0].isdigit():
        leaves = [("output", leaves[0][1])]
    elif leaves and all(name.isdigit() for name, _ in leaves):
        leaves = [(f"output.{name}", t) for name, t in leaves]
    return leaves


class ExportedModule(torch.nn.Module):
    """A ``torch.export`` program called with one tensor per tensor input (in the order of
    :func:`example_inputs`), returning a tuple of its output tensors.

    Inputs the export fixed to a constant (``return_dict=False``) are passed with the value
    they were exported with; keyword inputs are passed by name, as exported.
    """

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.inner = program.module()
        self._in_spec = program.call_spec.in_spec
        # _TENSOR: the next tensor given; anything else: a constant of the export
        self._layout: list[Any] = [
            spec.arg.value if isinstance(spec.arg, ConstantArgument) else _TENSOR
            for spec in program.graph_signature.input_specs
            if spec.kind is InputKind.USER_INPUT]

    def named_outputs(self, *tensors: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """The output tensors with their names (see :func:`output_tensors`)."""
        feed = iter(tensors)
        flat = [next(feed) if slot is _TENSOR else slot for slot in self._layout]
        args, kwargs = pytree.tree_unflatten(flat, self._in_spec)
        return output_tensors(self.inner(*args, **kwargs))

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for _, t in self.named_outputs(*tensors))


def load_torch_module(path: Path, kind: ArtifactKind) -> torch.nn.Module:
    """A module ready for inference (``eval`` mode). A ``torch.export`` archive comes as
    an :class:`ExportedModule` (flat tensors in, a tuple of tensors out)."""
    try:
        if kind is ArtifactKind.torch_exported:
            module: torch.nn.Module = ExportedModule(load_exported_program(path))
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


def _vocab_sizes(program: torch.export.ExportedProgram) -> dict[str, int]:
    """For each input that indexes an embedding table directly: the table's rows."""
    sizes: dict[str, int] = {}
    ops = {torch.ops.aten.embedding.default, torch.ops.aten.index_select.default}
    for node in program.graph.nodes:
        if node.target not in ops or len(node.args) < 2:
            continue
        table, index = (node.args[0], node.args[1]) if node.target is \
            torch.ops.aten.embedding.default else (node.args[0], node.args[2]
                                                   if len(node.args) > 2 else None)
        if getattr(index, "op", None) != "placeholder":
            continue
        value = getattr(table, "meta", {}).get("val")
        if value is not None and value.ndim >= 1:
            sizes.setdefault(index.name, int(value.shape[0]))
    return sizes


def _bound(value: Any, default: int) -> int:
    """A range bound as an int (``default`` for infinity)."""
    try:
        return int(value)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return default


def _dim_values(program: torch.export.ExportedProgram) -> dict[str, int]:
    """Small values for the program's free dimensions within their recorded ranges: the
    batch (a first dimension) 1, others 16."""
    from tinymlaas.formats.examples import EXAMPLE_BATCH, EXAMPLE_SEQUENCE

    first: set[str] = set()
    for node in program.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" else None
        if isinstance(value, torch.Tensor) and value.ndim and not isinstance(value.shape[0], int):
            first.add(str(value.shape[0]))
    values: dict[str, int] = {}
    for symbol, bounds in program.range_constraints.items():
        want = EXAMPLE_BATCH if str(symbol) in first else EXAMPLE_SEQUENCE
        low, high = _bound(bounds.lower, 0), _bound(bounds.upper, 2**31)
        values[str(symbol)] = min(max(want, low, 1), high)
    # example_inputs names a free first dimension "N"
    batch = [values[name] for name in first if name in values]
    if batch:
        values["N"] = max(batch)
    return values


def example_inputs(path: Path, kind: ArtifactKind,
                   input_shape: list[int] | None = None) -> list[TensorSpec]:
    """Input specs of the tensor inputs (batch dimension first, named ``N`` when dynamic;
    other free dimensions keep the exporter's symbol name)."""
    if kind is ArtifactKind.torch_exported:
        program = load_exported_program(path)
        specs = []
        user_inputs = set(program.graph_signature.user_inputs)
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name in user_inputs:
                value = node.meta.get("val")
                if not isinstance(value, torch.Tensor):
                    continue
                shape: list[int | str] = [
                    int(d) if isinstance(d, int) or str(d).isdigit()
                    else ("N" if axis == 0 else str(d)) for axis, d in enumerate(value.shape)]
                specs.append(TensorSpec(name=node.name, shape=shape,
                                        dtype=str(value.dtype).removeprefix("torch.")))
        return specs
    if input_shape is None:
        raise InvalidInputError("TorchScript files do not record input shapes; give the input "
                                "shape without the batch dimension (e.g. --input-shape 1,8,8)")
    return [TensorSpec(name="input", shape=["N", *input_shape], dtype="float32")]


def example_tensors(path: Path, kind: ArtifactKind,
                    specs: list[TensorSpec]) -> list[torch.Tensor]:
    """One example tensor per input of ``specs``: ids within the vocabulary of the
    embedding each feeds, masks of ones, floats of zeros (see
    :mod:`tinymlaas.formats.examples`), free dimensions small and within the ranges the
    export recorded."""
    from tinymlaas.formats.examples import example_arrays

    vocab: dict[str, int] = {}
    sizes: dict[str, int] = {}
    if kind is ArtifactKind.torch_exported:
        program = load_exported_program(path)
        vocab = _vocab_sizes(program)
        sizes = _dim_values(program)
    arrays = example_arrays(specs, vocab, sizes)
    return [torch.from_numpy(np.ascontiguousarray(arrays[s.name])) for s in specs]


def inspect_torch(path: Path, kind: ArtifactKind, input_shape: list[int] | None):
    from tinymlaas.formats.models import ModelInfo

    module = load_torch_module(path, kind)
    inputs = example_inputs(path, kind, input_shape)
    if input_shape is not None and kind is ArtifactKind.torch_exported:
        inputs[0].shape = ["N", *input_shape]
    parameters = sum(int(p.numel()) for p in module.parameters())
    example = example_tensors(path, kind, inputs)
    try:
        with torch.no_grad():
            leaves = module.named_outputs(*example) if isinstance(module, ExportedModule) \
                else output_tensors(module(*example))
    except Exception as exc:
        described = ", ".join(f"{s.name} {s.dtype}{list(t.shape)}"
                              for s, t in zip(inputs, example, strict=True))
        raise UnsupportedModelError(f"{path.name} failed on example inputs ({described}): "
                                    f"{str(exc).strip().splitlines()[0][:300]}") from exc
    if not leaves:
        raise UnsupportedModelError(
            f"{path.name} returns no tensors; export a model that "
            "returns a tensor or a tuple of tensors (for Hugging Face models pass "
            "return_dict=False, or wrap the model in a module whose forward returns a tuple)")
    outputs = [TensorSpec(name=name, shape=["N", *list(t.shape[1:])] if t.ndim else [],
                          dtype=str(t.dtype).removeprefix("torch.")) for name, t in leaves]
    return ModelInfo(kind=kind, inputs=inputs, outputs=outputs, parameters=parameters)
