"""Static facts about an ONNX graph: parameters, weight bytes, MACs.

These need no data and no runtime, so the compiler, the device analysis and the evaluation
all share them.

Dynamic dimensions. MACs depend on the batch and, for sequence models, on the sequence
length. Callers that know the dataset pass its per-input shapes (:func:`sample_shapes`);
otherwise the batch is 1 and every other free dimension (a transformer's ``sequence``) is
taken as :data:`DEFAULT_SEQUENCE` tokens.

Parameters are logical: the learned weights' elements, counted once whatever their
storage. A quantized graph has the same count as its float original: int8 weights count,
their scales and zero points do not, and neither do shape constants (int64) nor
initializers no node reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

__all__ = ["DEFAULT_SEQUENCE", "GraphStats", "count_macs", "graph_stats", "sample_shapes",
           "static_shapes", "topological_sort"]

#: Length taken for free non-batch dimensions (a transformer's sequence) when no dataset
#: says otherwise: the common ``max_length`` of sentence-embedding models.
DEFAULT_SEQUENCE = 128

# Inputs of these ops that hold quantization parameters, not learned weights.
_QUANT_PARAM_INPUTS: dict[str, set[int]] = {
    "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2},
    "QLinearConv": {1, 2, 4, 5, 6, 7},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "QLinearAdd": {1, 2, 4, 5, 6, 7},
    "QLinearMul": {1, 2, 4, 5, 6, 7},
    "ConvInteger": {2, 3},
    "MatMulInteger": {2, 3},
    "DynamicQuantizeLinear": set(),
}


@dataclass(frozen=True)
class GraphStats:
    """Parameter count (learned weights only), bytes of every initializer, and MACs."""

    parameters: int
    weight_bytes: int
    macs: int


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph``'s nodes so each comes after its producers (in place).

    Some tools append nodes (e.g. casts) at the end; the ONNX checker and shape inference
    need topological order.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            return  # a cycle or a dangling input: leave the graph for the checker to report
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def static_shapes(model: onnx.ModelProto, batch: int = 1,
                  input_shapes: dict[str, list[int]] | None = None,
                  other_dims: int | None = None) -> dict[str, list[int]]:
    """Concrete shapes of every value.

    Args:
        model: The graph.
        batch: The value of every free dimension (or, with ``other_dims``, of the first).
        input_shapes: Full shapes of named inputs (from a dataset); they win over the rest.
        other_dims: The value of free dimensions after the first (a sequence length); None
            sets them to ``batch`` too, as the compiler expects.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    topological_sort(model.graph)
    init_names = {i.name for i in model.graph.initializer}
    given = input_shapes or {}
    for value in model.graph.input:
        if value.name in init_names:
            continue
        dims = value.type.tensor_type.shape.dim
        known = given.get(value.name)
        if known is not None and len(known) == len(dims):
            for dim, size in zip(dims, known, strict=True):
                dim.Clear()
                dim.dim_value = int(size)
            continue
        for position, dim in enumerate(dims):
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = batch if position == 0 or other_dims is None else other_dims
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = _known_shapes(inferred.graph)
    if any(n.output[0] not in shapes for n in model.graph.node if n.op_type in _MAC_OPS):
        shapes = {**_symbolic_shapes(model), **shapes}
    return shapes


#: Ops whose MACs :func:`count_macs` counts (their output shapes must be known).
_MAC_OPS = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "Gemm", "MatMul",
            "MatMulInteger", "QLinearMatMul", "FusedMatMul"}


def _known_shapes(graph: onnx.GraphProto) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _symbolic_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """ONNX Runtime's symbolic shape inference, for graphs where ONNX's own stops.

    Exported transformers compute their reshapes from ``Shape`` -> ``Gather`` -> ``Concat``
    chains and slice position ids by the sequence length; ONNX's data propagation loses
    track of some of these (at batch 1 it does), ONNX Runtime's follows them.
    """
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # an optional refinement: keep what ONNX inferred
        return {}
    return _known_shapes(inferred.graph) if inferred is not None else {}


def sample_shapes(X: np.ndarray, input_names: list[str]) -> dict[str, list[int]]:
    """Shapes of one sample (batch 1) of a dataset's ``X`` for each model input: a
    structured ``X`` has a field per input; a plain one feeds the first input."""
    if X.dtype.names:
        return {name: [1, *X.dtype[name].shape] for name in X.dtype.names
                if name in input_names}
    return {input_names[0]: [1, *X.shape[1:]]} if input_names else {}


#: Name suffix of the per-channel factors of activation smoothing (a ``Mul`` in front of
#: MatMuls whose weights carry the inverse factors): a change of variables, not weights.
SMOOTHING_SUFFIX = "__smooth"


def _weight_inputs(model: onnx.ModelProto) -> set[str]:
    """Initializers that are learned weights: read by some node, and not scales, zero
    points, smoothing factors or shape constants."""
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    used = {name for node in graph.node for name in node.input} | \
        {o.name for o in graph.output}
    quant_params = {name for name in init_names if name.endswith(SMOOTHING_SUFFIX)}
    shape_like: set[str] = set()
    # dynamic int8 rescales the integer product by (activation scale x weight scale): the
    # weight scale is a Mul input next to a DynamicQuantizeLinear scale
    dynamic_scales = {n.output[1] for n in graph.node
                      if n.op_type == "DynamicQuantizeLinear" and len(n.output) > 1}
    for node in graph.node:
        for idx, name in enumerate(node.input):
            if idx in _QUANT_PARAM_INPUTS.get(node.op_type, set()):
                quant_params.add(name)
        if node.op_type == "Mul" and dynamic_scales.intersection(node.input):
            quant_params.update(node.input)
        if node.op_type in {"Reshape", "Expand", "Tile", "Slice", "Squeeze", "Unsqueeze",
                            "Resize", "Pad", "ReduceMean", "ReduceSum", "ConstantOfShape"}:
            shape_like.update(node.input[1:])
    return (init_names & used) - quant_params - shape_like


def count_macs(model: onnx.ModelProto, shapes: dict[str, list[int]] | None = None,
               input_shapes: dict[str, list[int]] | None = None) -> int:
    """Multiply-accumulates of one inference: Conv, Gemm, MatMul (attention's activation x
    activation products included) and their integer forms.

    ``shapes`` are every value's shapes; without them they are inferred with
    ``input_shapes`` (from a dataset) or batch 1 and :data:`DEFAULT_SEQUENCE` for other free
    dimensions.
    """
    if shapes is None:
        shapes = static_shapes(model, batch=1, input_shapes=input_shapes,
                               other_dims=DEFAULT_SEQUENCE)
    total = 0
    for node in model.graph.node:
        op = node.op_type
        if op in {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose"}:
            w_index = 3 if op == "QLinearConv" else 1
            out = shapes.get(node.output[0])
            w = shapes.get(node.input[w_index])
            if out and w:
                if op == "ConvTranspose":
                    x = shapes.get(node.input[0])
                    total += prod(x) * prod(w[1:]) if x else 0
                else:
                    total += prod(out) * prod(w[1:])
        elif op in {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul"}:
            out = shapes.get(node.output[0])
            a = shapes.get(node.input[0])
            if out and a:
                k = a[0] if (op == "Gemm" and _attr(node, "transA", 0)) else a[-1]
                total += prod(out) * k
    return int(total)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(onnx.helper.get_attribute_value(attribute))
    return default


def graph_stats(model: onnx.ModelProto,
                input_shapes: dict[str, list[int]] | None = None) -> GraphStats:
    """Parameters, weight bytes and MACs of an ONNX model (weights must be loaded).

    ``input_shapes`` (see :func:`sample_shapes`) resolve free dimensions for the MACs.
    """
    weights = _weight_inputs(model)
    parameters = 0
    weight_bytes = 0
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        weight_bytes += int(array.nbytes)
        if init.name in weights and array.ndim >= 1 and array.dtype != np.int64 and \
                np.issubdtype(array.dtype, np.number):
            parameters += int(array.size)
    return GraphStats(parameters=parameters, weight_bytes=weight_bytes,
                      macs=count_macs(model, input_shapes=input_shapes))
