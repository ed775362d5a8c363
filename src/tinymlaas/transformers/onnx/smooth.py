"""Activation smoothing before dynamic int8 (SmoothQuant, Xiao et al. 2023).

A transformer's LayerNorm and GELU outputs have a few channels far wider than the rest.
Dynamic int8 gives each activation tensor one scale at run time, so those channels set the
grid and the others are left with a handful of levels. Smoothing moves part of that width
into the weights, which have one scale per output channel and do not mind: for a MatMul
``x @ W`` with per-channel activation maxima ``a`` and weight-row maxima ``w``, the graph
computes ``(x / s) @ (s * W)`` with ``s = a**alpha / w**(1 - alpha)``. In float that is the
same function; in int8 both operands are easy to quantize.

A ``Mul`` by ``1 / s`` is put in front of each group of MatMuls that read the same
activation (the three of Q, K and V read one LayerNorm output), since that activation also
feeds a residual path that must not change. The maxima come from the calibration split.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tinymlaas.evaluation.static import SMOOTHING_SUFFIX

__all__ = ["activation_maxima", "smooth", "smoothable_groups"]

#: Bounds of the per-channel factors, so that a dead channel (maximum near 0) does not blow
#: up its weight row.
_FACTOR_RANGE = (1e-2, 1e2)


def smoothable_groups(model: onnx.ModelProto) -> dict[str, list[int]]:
    """MatMuls of an activation by a 2-D float weight that nothing else reads, grouped by
    the activation they read (as indices into the graph's nodes)."""
    weights = {i.name: i for i in model.graph.initializer
               if len(i.dims) == 2 and i.data_type == onnx.TensorProto.FLOAT}
    readers = Counter(name for node in model.graph.node for name in node.input)
    groups: dict[str, list[int]] = {}
    for index, node in enumerate(model.graph.node):
        if (node.op_type == "MatMul" and node.input[1] in weights
                and node.input[0] not in weights and readers[node.input[1]] == 1):
            groups.setdefault(node.input[0], []).append(index)
    return groups


def activation_maxima(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]],
                      names: list[str]) -> dict[str, np.ndarray]:
    """Per-channel (last axis) maximum of ``|x|`` for each named activation over ``feeds``."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names if n not in known)
    session = ort.InferenceSession(probe.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            top = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            maxima[name] = np.maximum(maxima[name], top) if name in maxima else top
    return maxima


def smooth(model: onnx.ModelProto, maxima: dict[str, np.ndarray], alpha: float
           ) -> onnx.ModelProto:
    """A copy of ``model`` that computes the same function with its smoothable MatMuls'
    activations divided by ``s`` and their weight rows multiplied by it."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    initializers = {i.name: i for i in out.graph.initializer}
    inserts: list[tuple[int, onnx.NodeProto]] = []
    for activation, indices in smoothable_groups(out).items():
        if activation not in maxima:
            continue
        nodes = [out.graph.node[i] for i in indices]
        weights = [numpy_helper.to_array(initializers[n.input[1]]) for n in nodes]
        if any(w.shape[0] != maxima[activation].shape[0] for w in weights):
            continue
        rows = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        factor = (np.maximum(maxima[activation], 1e-5) ** alpha
                  / np.maximum(rows, 1e-5) ** (1.0 - alpha))
        factor = np.clip(factor, *_FACTOR_RANGE).astype(np.float32)
        inverse = numpy_helper.from_array(1.0 / factor, activation + SMOOTHING_SUFFIX)
        out.graph.initializer.append(inverse)
        smoothed = f"{activation}__smoothed"
        inserts.append((indices[0], helper.make_node(
            "Mul", [activation, inverse.name], [smoothed], name=activation + SMOOTHING_SUFFIX)))
        for node, weight in zip(nodes, weights, strict=True):
            node.input[0] = smoothed
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(
                (weight * factor[:, None]).astype(np.float32), node.input[1]))
    for index, node in sorted(inserts, key=lambda item: item[0], reverse=True):
        out.graph.node.insert(index, node)
    return out
