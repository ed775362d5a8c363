"""Which runtimes can execute which ONNX operators (a static table).

``c`` is this project's compiler (exact: the operators it lowers). ``onnxruntime`` runs
every operator of the standard ONNX domains. ``tflite-micro`` lists the ONNX operators
that a TFLite converter maps onto a TFLite Micro builtin kernel (reference kernels of the
2025 releases); it is an approximation, since conversion can also fail on attributes.
"""

from __future__ import annotations

import onnx

__all__ = ["RUNTIMES", "TFLITE_MICRO_OPS", "supported_by"]

RUNTIMES = ("c", "onnxruntime", "tflite-micro")

TFLITE_MICRO_OPS: frozenset[str] = frozenset({
    "Abs", "Add", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Ceil",
    "Clip", "Concat", "Constant", "Conv", "ConvTranspose", "DepthToSpace", "DequantizeLinear",
    "Div", "Dropout", "Elu", "Equal", "Exp", "Flatten", "Floor", "Gather", "Gemm",
    "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSwish", "Identity", "LeakyRelu",
    "Less", "Log", "LogSoftmax", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Not", "Pad",
    "PRelu", "QuantizeLinear", "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape",
    "Resize", "Round", "Shape", "Sigmoid", "Slice", "Softmax", "SpaceToDepth", "Split",
    "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze", "Where",
})


def _compiler_ops() -> frozenset[str]:
    from tinymlaas.compiler import SUPPORTED_OPS

    return SUPPORTED_OPS | {"Shape"}


def supported_by(runtime: str, op_type: str, domain: str = "") -> bool:
    """Whether ``runtime`` can execute an operator.

    Args:
        runtime: ``c``, ``onnxruntime`` or ``tflite-micro``.
        op_type: The ONNX operator type.
        domain: The operator's domain (``""`` for standard ONNX).
    """
    standard = domain in ("", "ai.onnx")
    if runtime == "c":
        return standard and op_type in _compiler_ops()
    if runtime == "onnxruntime":
        if domain in ("com.microsoft", "ai.onnx.ml"):
            return True
        return standard and onnx.defs.has(op_type)
    if runtime == "tflite-micro":
        return standard and op_type in TFLITE_MICRO_OPS
    return False
