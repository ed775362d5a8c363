"""Operator handlers; importing this package registers them with the lowering."""

from tinymlaas.compiler.ops import elementwise, nn, quant, resample, tensor

__all__ = ["elementwise", "nn", "quant", "resample", "tensor"]
