"""Static facts about an ONNX graph: parameters, weight bytes, MACs.

These need no data and no runtime, so the compiler, the device analysis and the evaluation
all share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

__all__ = ["GraphStats", "count_macs", "graph_stats", "static_shapes", "topological_sort"]

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


def static_shapes(model: onnx.ModelProto, batch: int = 1) -> dict[str, list[int]]:
    """Concrete shapes of every value, with symbolic dimensions set to ``batch``."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    topological_sort(model.graph)
    init_names = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in init_names:
            continue
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = batch
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _weight_inputs(model: onnx.ModelProto) -> set[str]:
    """Initializers that are learned weights (not scales, zero points or shape constants)."""
    init_names = {i.name for i in model.graph.initializer}
    quant_params: set[str] = set()
    shape_like: set[str] = set()
    for node in model.graph.node:
        for idx, name in enumerate(node.input):
            if idx in _QUANT_PARAM_INPUTS.get(node.op_type, set()):
                quant_params.add(name)
        if node.op_type in {"Reshape", "Expand", "Tile", "Slice", "Squeeze", "Unsqueeze",
                            "Resize", "Pad", "ReduceMean", "ReduceSum", "ConstantOfShape"}:
            shape_like.update(node.input[1:])
    return init_names - quant_params - shape_like


def count_macs(model: onnx.ModelProto, shapes: dict[str, list[int]] | None = None) -> int:
    """Multiply-accumulates of one inference at batch 1 (Conv, Gemm, MatMul and their int forms)."""
    shapes = shapes if shapes is not None else static_shapes(model)
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


def graph_stats(model: onnx.ModelProto) -> GraphStats:
    """Parameters, weight bytes and MACs of an ONNX model (weights must be loaded)."""
    weights = _weight_inputs(model)
    parameters = 0
    weight_bytes = 0
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        weight_bytes += int(array.nbytes)
        if init.name in weights and array.ndim >= 1 and np.issubdtype(array.dtype, np.number):
            parameters += int(array.size)
    return GraphStats(parameters=parameters, weight_bytes=weight_bytes, macs=count_macs(model))
