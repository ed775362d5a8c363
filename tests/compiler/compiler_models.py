"""Building int8 QDQ models for the compiler tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def quantize_qdq(src: Path, dst: Path, calibration: np.ndarray, *, per_channel: bool,
                 activations: str = "int8") -> Path:
    """ONNX Runtime static QDQ quantization (int8 weights)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load(str(src)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    quantize_static(
        str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
        activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return dst
