"""The C kernel library the generated code is built from: real ``.c`` and ``.h`` files.

Two kernel sets ship as package data next to this module:

``portable/``
    Plain C99 for any compiler and CPU: every kernel the compiler emits. Built for speed
    (not ``-Os``), its int8 convolutions go through 16-bit columns and dot products that
    the compiler vectorises.
``cortex-m-dsp/``
    Arm Cortex-M DSP-extension versions of the hot int8 kernels (the convolution tile that
    convolutions, depthwise convolutions and fused residual convolutions share, and the
    fully connected inner product), written with ``arm_acle.h`` intrinsics (``__smlad``,
    ``__sxtb16``, ``__sxtab16``, ``__uxtab16``), for int8 and uint8 inputs; its
    convolutions run a pointwise convolution's planes as single rows, and those that
    reuse a window for several output channels go through 16-bit columns (im2col) with
    two channels times two pixels per step. Every other kernel
    comes from the portable set. A model generated with this set still compiles anywhere:
    each DSP kernel sits under ``#if TM_DSP`` with its portable twin in the ``#else``
    branch.

Every kernel is a ``static`` function instantiated on demand for the element types it
needs, so a model's ``.c`` file contains only what that model calls and links with nothing
but libc and libm. Kernel names read ``tm_<kernel>_<types>``, e.g. ``tm_qconv2d_s8s8``
(int8 in, int8 out) or ``tm_unary_relu_f32``.

The files are templates in valid C: type parameters are identifiers ``TMPL_XT`` (input
element type), ``TMPL_YT`` (output element type), ``TMPL_S`` (type suffix, part of the
function name), ``TMPL_XC`` (input type code), ``TMPL_OFF``, ``TMPL_OP``, ``TMPL_EXPR``,
``TMPL_LOF`` and ``TMPL_HIF``. :func:`kernel_source` replaces them; a C test can instead
define them as macros and include the file.

Quantized kernels follow TensorFlow Lite's integer arithmetic: int32 accumulators and
requantization with ``MultiplyByQuantizedMultiplier`` (a Q31 multiplier and a power-of-two
shift: a saturating doubling high multiply that rounds half up, then a division by a power
of two that rounds half away from zero), so int8 results match TFLite Micro bit for bit,
with either kernel set.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal, get_args

__all__ = [
    "BINARY_EXPR",
    "C_TYPES",
    "KERNEL_SETS",
    "UNARY_EXPR",
    "KernelSet",
    "kernel_dependencies",
    "kernel_file",
    "kernel_source",
    "prelude",
    "split_func",
]

#: The kernel sets: directory names under this package.
KernelSet = Literal["portable", "cortex-m-dsp"]
KERNEL_SETS: tuple[str, ...] = get_args(KernelSet)

#: Element type codes used in kernel names, and their C types.
C_TYPES: dict[str, str] = {
    "f32": "float",
    "s8": "int8_t",
    "u8": "uint8_t",
    "s16": "int16_t",
    "u16": "uint16_t",
    "s32": "int32_t",
    "s64": "int64_t",
    "b8": "uint8_t",
    "b16": "uint16_t",
    "b32": "uint32_t",
    "b64": "uint64_t",
}
_RANGES: dict[str, tuple[int, int]] = {
    "s8": (-128, 127),
    "u8": (0, 255),
    "s16": (-32768, 32767),
    "u16": (0, 65535),
    "s32": (-2147483647 - 1, 2147483647),
}

#: Unary float operators: C expression of ``v`` (and parameters ``p0``, ``p1``).
UNARY_EXPR: dict[str, str] = {
    "relu": "v > 0.0f ? v : 0.0f",
    "clip": "v < p0 ? p0 : (v > p1 ? p1 : v)",
    "sigmoid": "1.0f / (1.0f + expf(-v))",
    "tanh": "tanhf(v)",
    "leakyrelu": "v >= 0.0f ? v : v * p0",
    "exp": "expf(v)",
    "log": "logf(v)",
    "sqrt": "sqrtf(v)",
    "abs": "fabsf(v)",
    "neg": "-v",
    "reciprocal": "1.0f / v",
    "floor": "floorf(v)",
    "ceil": "ceilf(v)",
    "erf": "erff(v)",
    "hardsigmoid": "fmaxf(0.0f, fminf(1.0f, p0 * v + p1))",
    "hardswish": "v * fmaxf(0.0f, fminf(1.0f, v / 6.0f + 0.5f))",
    "elu": "v >= 0.0f ? v : p0 * (expf(v) - 1.0f)",
    "softplus": "v > 20.0f ? v : log1pf(expf(v))",
    "softsign": "v / (1.0f + fabsf(v))",
}
#: Binary operators: C expression of ``u`` (left) and ``v`` (right).
BINARY_EXPR: dict[str, str] = {
    "add": "u + v",
    "sub": "u - v",
    "mul": "u * v",
    "div": "u / v",
    "max": "u > v ? u : v",
    "min": "u < v ? u : v",
}
#: The requantization statement of the quantized add and mul (``TMPL_EXPR`` of qbinary.c).
QBINARY_EXPR: dict[str, str] = {
    "add": "r = tm_mbqm(tm_mbqm(u * (1 << 20), ma, sha) + tm_mbqm(v * (1 << 20), mb, shb), "
           "my, shy);",
    "mul": "r = tm_mbqm(u * v, my, shy);",
}

#: Kernels without type parameters: name -> file of the portable set.
FIXED: dict[str, str] = {
    "tm_conv2d_f32": "conv2d_f32.c",
    "tm_conv2d_add_f32": "conv2d_add_f32.c",
    "tm_convtile_f32": "convtile_f32.c",
    "tm_gemm_f32": "gemm_f32.c",
    "tm_matmul_f32": "matmul_f32.c",
    "tm_avgpool_f32": "avgpool_f32.c",
    "tm_gap_f32": "gap_f32.c",
    "tm_reduce_mean_f32": "reduce_mean_f32.c",
    "tm_softmax_f32": "softmax_f32.c",
    "tm_copy2d": "copy2d.c",
    "tm_batchnorm_f32": "batchnorm_f32.c",
}
#: Templated kernels: base name -> (file of the portable set, number of type parameters).
TEMPLATES: dict[str, tuple[str, int]] = {
    "qconv2d": ("qconv2d.c", 2),
    "convtile": ("convtile.c", 1),
    "qconv2d_add": ("qconv2d_add.c", 2),
    "qgemm": ("qgemm.c", 2),
    "maxpool": ("maxpool.c", 1),
    "qavgpool": ("qavgpool.c", 2),
    "clamp": ("clamp.c", 1),
    "cliprt": ("cliprt.c", 1),
    "lut": ("lut.c", 2),
    "qsoftmax": ("qsoftmax.c", 2),
    "qsoftmax_tfl": ("qsoftmax_tfl.c", 2),
    "quantize": ("quantize.c", 1),
    "dequantize": ("dequantize.c", 1),
    "requant": ("requant.c", 2),
    "transpose": ("transpose.c", 1),
    "remap": ("remap.c", 1),
    "qadd": ("qbinary.c", 2),
    "qmul": ("qbinary.c", 2),
}
#: Kernels of the Cortex-M DSP set: base name -> (file, input type codes it covers). The
#: DSP set falls back to the portable file for every other kernel or input type.
DSP_KERNELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "convtile": ("convtile.c", ("s8", "u8")),
    "qconv2d": ("qconv2d.c", ("s8", "u8")),
    "qconv2d_add": ("qconv2d_add.c", ("s8", "u8")),
    "qgemm": ("qgemm.c", ("s8", "u8")),
}
_TYPE_CODE = re.compile(r"f32|s8|u8|s16|u16|s32|s64|b8|b16|b32|b64")
_PLACEHOLDER = re.compile(r"TMPL_([A-Z]+)")


@cache
def kernel_file(kernel_set: str, name: str) -> str:
    """The text of one file of a kernel set (``prelude.h``, ``qconv2d.c`` ...).

    Raises:
        KeyError: No such kernel set or file.
    """
    if kernel_set not in KERNEL_SETS:
        raise KeyError(f"unknown kernel set {kernel_set!r}; known: {', '.join(KERNEL_SETS)}")
    path = resources.files("tinymlaas.compiler.kernels").joinpath(kernel_set, name)
    if not path.is_file():
        raise KeyError(f"{kernel_set}/{name}")
    return path.read_text("utf-8")


def prelude(kernel_set: KernelSet = "portable") -> str:
    """The helpers every generated source starts with (fixed-point arithmetic, clamps).

    The DSP set adds its own header, which defines ``TM_DSP`` (1 where the compiler targets
    a core with the DSP extension) and includes ``arm_acle.h`` there.
    """
    text = "\n" + kernel_file("portable", "prelude.h")
    if kernel_set == "cortex-m-dsp":
        text += "\n" + kernel_file("cortex-m-dsp", "prelude.h")
    return text


def split_func(func: str) -> tuple[str, list[str]]:
    """Split ``tm_qconv2d_s8s8`` into ``("qconv2d", ["s8", "s8"])``."""
    body = func.removeprefix("tm_")
    base, _, suffix = body.rpartition("_")
    return base, _TYPE_CODE.findall(suffix)


def kernel_dependencies(func: str) -> list[str]:
    """Kernels that ``func`` calls, which must be defined before it."""
    base, types = split_func(func)
    if base in ("conv2d", "conv2d_add"):
        return ["tm_convtile_f32"]
    if base in ("qconv2d", "qconv2d_add"):
        return [f"tm_convtile_{types[0]}"]
    return []


def _instantiate(text: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def _portable(func: str) -> str:
    if func in FIXED:
        return "\n" + kernel_file("portable", FIXED[func])
    base, types = split_func(func)
    suffix = "".join(types)
    if base.startswith("unary_"):
        op = base.removeprefix("unary_")
        values = {"OP": op, "EXPR": UNARY_EXPR[op]}
        return "\n" + _instantiate(kernel_file("portable", "unary_f32.c"), values)
    if base.startswith("binary_"):
        op = base.removeprefix("binary_")
        values = {"OP": op, "S": suffix, "XT": C_TYPES[types[0]], "EXPR": BINARY_EXPR[op]}
        return "\n" + _instantiate(kernel_file("portable", "binary.c"), values)
    if base not in TEMPLATES:
        raise KeyError(func)
    name, arity = TEMPLATES[base]
    if len(types) != arity:
        raise KeyError(func)
    return "\n" + _instantiate(kernel_file("portable", name), _values(base, types))


def _values(base: str, types: list[str]) -> dict[str, str]:
    xt = C_TYPES[types[0]]
    values = {
        "XC": types[0],
        "S": "".join(types),
        "XT": xt,
        "YT": C_TYPES[types[-1]],
        "OFF": "128" if types[0] == "s8" else "0",
        "OP": base.removeprefix("q"),
        "EXPR": QBINARY_EXPR.get(base.removeprefix("q"), ""),
    }
    if base == "quantize":
        values["YT"] = xt
        low, high = _RANGES[types[0]]
        values["LOF"], values["HIF"] = f"{low}.0f", f"{high}.0f"
    return values


def kernel_source(func: str, kernel_set: KernelSet = "portable") -> str:
    """The C source of one kernel function, instantiated for its types.

    Args:
        func: A kernel name as used by the generated code, e.g. ``tm_binary_add_f32``.
        kernel_set: ``"portable"`` (C99), or ``"cortex-m-dsp"``: the DSP version where the
            set has one, guarded by ``#if TM_DSP`` with the portable one as fallback.

    Returns:
        C source text defining ``func``.

    Raises:
        KeyError: The kernel library has no such kernel.
    """
    portable = _portable(func)
    if kernel_set == "portable":
        return portable
    if kernel_set not in KERNEL_SETS:
        raise KeyError(f"unknown kernel set {kernel_set!r}")
    base, types = split_func(func)
    if base not in DSP_KERNELS or types[0] not in DSP_KERNELS[base][1]:
        return portable
    dsp = _instantiate(kernel_file(kernel_set, DSP_KERNELS[base][0]), _values(base, types))
    return f"\n#if TM_DSP\n{dsp}#else{portable}#endif\n"
