"""Operator handlers; importing this package registers them with the lowering."""

from tinymlaas.compiler.ops import elementwise, nn, quant, tensor

__all__ = ["elementwise", "nn", "quant", "tensor"]
