"""What an ONNX value is while lowering: a constant, a runtime tensor, or a lazy view.

* :class:`Const`: a numpy constant (initializers, folded subgraphs).
* :class:`QConst`: ``DequantizeLinear`` of a constant: integer data with its scale and
  zero point, kept quantized so weights stay int8 in flash.
* :class:`Act`: a runtime tensor, used as it is stored.
* :class:`QAct`: ``DequantizeLinear`` of an int8/uint8 runtime tensor, not computed: the
  float value ``scale * (q - zero_point)`` is only materialised when a float kernel needs
  it. Quantized kernels read the integers directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinymlaas.compiler.ir import Tensor

__all__ = ["Act", "Const", "QAct", "QConst", "Value"]


@dataclass
class Const:
    array: np.ndarray


@dataclass
class QConst:
    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None

    def dequantize(self) -> np.ndarray:
        """Float32 values, as ONNX's DequantizeLinear computes them."""
        scale, zp = self._broadcast(self.scale), self._broadcast(self.zero_point)
        out = (self.q.astype(np.float32) - zp.astype(np.float32)) * scale.astype(np.float32)
        return out.astype(np.float32)

    def dequantize64(self) -> np.ndarray:
        """Float64 values (exact for int32 biases)."""
        scale, zp = self._broadcast(self.scale), self._broadcast(self.zero_point)
        return (self.q.astype(np.float64) - zp.astype(np.float64)) * scale.astype(np.float64)

    def per_channel(self, channels: int, axis: int) -> np.ndarray | None:
        """The scale as one float64 per channel along ``axis``, or None if along another."""
        if self.scale.size == 1:
            return np.full(channels, float(self.scale.ravel()[0]), dtype=np.float64)
        if self.axis is None or self.axis % self.q.ndim != axis % self.q.ndim:
            return None
        return self.scale.astype(np.float64).ravel()

    def _broadcast(self, param: np.ndarray) -> np.ndarray:
        if param.size == 1 or self.axis is None:
            return param.reshape(())
        shape = [1] * self.q.ndim
        shape[self.axis] = -1
        return param.reshape(shape)


@dataclass
class Act:
    tensor: Tensor
    qparams: tuple[float, int] | None = None
    origin: int | None = None


@dataclass
class QAct:
    tensor: Tensor
    scale: float
    zero_point: int
    origin: int | None = None


Value = Const | QConst | Act | QAct
