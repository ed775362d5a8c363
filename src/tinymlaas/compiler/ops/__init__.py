"""Operator handlers; importing this package registers them with the lowering."""

from tinymlaas.compiler.ops import elementwise, nn, quant, resample, tensor, tflite_softmax

tflite_softmax.register_reference()

__all__ = ["elementwise", "nn", "quant", "resample", "tensor", "tflite_softmax"]
