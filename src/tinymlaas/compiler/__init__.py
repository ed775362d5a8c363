"""ONNX to C99 compiler: weights in flash, one planned arena, fixed-point int8 kernels.

Public API::

    from tinymlaas.compiler import compile_onnx, HostModel
    result = compile_onnx("model.onnx", "out/", name="model")   # out/model.h, out/model.c
    y = HostModel(result).run(x)                                  # built with cc, via ctypes
    compile_onnx("model.onnx", "m4/", target="cortex-m4")           # Cortex-M4: DSP kernels
"""

from tinymlaas.compiler.api import CompileResult, build_program, compile_onnx
from tinymlaas.compiler.host import HostModel, build_host
from tinymlaas.compiler.ir import IOSpec, Program
from tinymlaas.compiler.lower import Lowering
from tinymlaas.compiler.targets import Target, get_target

SUPPORTED_OPS: frozenset[str] = frozenset()


def _supported() -> frozenset[str]:
    from tinymlaas.compiler import ops  # noqa: F401 - registers the handlers

    return frozenset(Lowering.handlers)


SUPPORTED_OPS = _supported()

__all__ = [
    "SUPPORTED_OPS",
    "CompileResult",
    "HostModel",
    "IOSpec",
    "Program",
    "Target",
    "build_host",
    "build_program",
    "compile_onnx",
    "get_target",
]
