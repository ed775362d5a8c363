"""Hand-built ONNX graphs for compiler tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def tflite_style_int8(seed: int = 0) -> onnx.ModelProto:
    """A graph shaped like tf2onnx output of an int8 TFLite model.

    int8 NHWC input with a symbolic batch -> Transpose -> DQ -> Conv (per-channel) -> Relu
    -> Q -> DQ -> depthwise Conv -> Q -> DQ -> AveragePool -> Q -> Reshape (on int8) -> DQ
    -> MatMul -> Add bias -> Q -> DQ -> Softmax -> Q -> int8 output.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def q(name: str, scale: float, zp: int) -> tuple[str, str]:
        inits.append(_init(f"{name}_s", np.array(scale, np.float32)))
        inits.append(_init(f"{name}_z", np.array(zp, np.int8)))
        return f"{name}_s", f"{name}_z"

    def dq_weight(name: str, w: np.ndarray, axis: int | None) -> str:
        scale = (np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis)) / 127
                 if axis is not None else np.array(np.abs(w).max() / 127))
        scale = scale.astype(np.float32)
        shape = [1] * w.ndim
        if axis is not None:
            shape[axis] = -1
        wq = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        inits.append(_init(f"{name}_q", wq))
        inits.append(_init(f"{name}_ws", scale))
        inits.append(_init(f"{name}_wz", np.zeros(scale.shape, np.int8)))
        attrs = {"axis": axis} if axis is not None else {}
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_ws",
                                                           f"{name}_wz"], [name], **attrs))
        return name

    def dq_bias(name: str, b: np.ndarray, scale: np.ndarray) -> str:
        bq = np.rint(b / scale).astype(np.int32)
        inits.append(_init(f"{name}_q", bq))
        inits.append(_init(f"{name}_bs", scale.astype(np.float32)))
        inits.append(_init(f"{name}_bz", np.zeros(scale.shape, np.int32)))
        attrs = {"axis": 0} if scale.ndim else {}
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_bs",
                                                           f"{name}_bz"], [name], **attrs))
        return name

    s_in, z_in = q("in", 0.02, -3)
    nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
    nodes.append(helper.make_node("DequantizeLinear", ["x_nchw", s_in, z_in], ["x_f"]))
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    dq_weight("w1", w1, 0)
    b1 = dq_bias("b1", rng.normal(0, 0.1, 8), 0.02 * np.abs(w1).max(axis=(1, 2, 3)) / 127)
    nodes.append(helper.make_node("Conv", ["x_f", "w1", b1], ["c1"], pads=[1, 1, 1, 1],
                                  strides=[2, 2]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    s1, z1 = q("a1", 0.03, -128)
    nodes.append(helper.make_node("QuantizeLinear", ["r1", s1, z1], ["r1_q"]))
    nodes.append(helper.make_node("DequantizeLinear", ["r1_q", s1, z1], ["r1_f"]))
    w2 = rng.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32)
    dq_weight("w2", w2, 0)
    nodes.append(helper.make_node("Conv", ["r1_f", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8))
    s2, z2 = q("a2", 0.05, 5)
    nodes.append(helper.make_node("QuantizeLinear", ["c2", s2, z2], ["c2_q"]))
    nodes.append(helper.make_node("DequantizeLinear", ["c2_q", s2, z2], ["c2_f"]))
    nodes.append(helper.make_node("AveragePool", ["c2_f"], ["p"], kernel_shape=[4, 4],
                                  strides=[4, 4]))
    nodes.append(helper.make_node("QuantizeLinear", ["p", s2, z2], ["p_q"]))
    inits.append(_init("shape", np.array([-1, 8], np.int64)))
    nodes.append(helper.make_node("Reshape", ["p_q", "shape"], ["flat_q"]))
    nodes.append(helper.make_node("DequantizeLinear", ["flat_q", s2, z2], ["flat"]))
    w3 = rng.normal(0, 0.3, (8, 5)).astype(np.float32)
    dq_weight("w3", w3, None)
    b3 = dq_bias("b3", rng.normal(0, 0.1, 5), np.array(0.05 * np.abs(w3).max() / 127))
    nodes.append(helper.make_node("MatMul", ["flat", "w3"], ["mm"]))
    nodes.append(helper.make_node("Add", ["mm", b3], ["logits"]))
    s3, z3 = q("a3", 0.04, 2)
    nodes.append(helper.make_node("QuantizeLinear", ["logits", s3, z3], ["logits_q"]))
    nodes.append(helper.make_node("DequantizeLinear", ["logits_q", s3, z3], ["logits_f"]))
    nodes.append(helper.make_node("Softmax", ["logits_f"], ["prob"], axis=-1))
    s4, z4 = q("out", 1 / 256, -128)
    nodes.append(helper.make_node("QuantizeLinear", ["prob", s4, z4], ["y"]))
    graph = helper.make_graph(
        nodes, "tflite_style",
        [helper.make_tensor_value_info("x", TensorProto.INT8, ["batch", 8, 8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, ["batch", 5])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    return model


def float_ops_graph(seed: int = 0) -> onnx.ModelProto:
    """Float graph touching Gemm, Concat, Sigmoid, Tanh, Mul broadcasting and Softmax."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w", rng.normal(size=(6, 12)).astype(np.float32)),
        _init("b", rng.normal(size=(6,)).astype(np.float32)),
        _init("gain", rng.normal(size=(1, 12)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1, alpha=0.5),
        helper.make_node("Sigmoid", ["g"], ["s"]),
        helper.make_node("Tanh", ["g"], ["t"]),
        helper.make_node("Concat", ["s", "t"], ["c"], axis=1),
        helper.make_node("Mul", ["c", "gain"], ["m"]),
        helper.make_node("Softmax", ["m"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "float_ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 12])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def unsupported_graph() -> onnx.ModelProto:
    """Two operators the compiler does not implement, with recognisable node names."""
    graph = helper.make_graph(
        [helper.make_node("Sin", ["x"], ["a"], name="my_sine"),
         helper.make_node("Relu", ["a"], ["b"], name="fine_relu"),
         helper.make_node("Cos", ["b"], ["y"], name="my_cosine")],
        "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def residual_block(seed: int = 0) -> onnx.ModelProto:
    """x -> Conv -> Relu -> Conv -> Add(x) -> Relu, NCHW 1x4x8x8 (a ResNet basic block)."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w1", rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32)),
        _init("b1", rng.normal(0, 0.1, 4).astype(np.float32)),
        _init("w2", rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32)),
        _init("b2", rng.normal(0, 0.1, 4).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
