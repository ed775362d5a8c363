"""C99 code generation for a planned :class:`~tinymlaas.compiler.ir.Program`."""

from __future__ import annotations

import math
import re

import numpy as np

from tinymlaas.compiler.ckernels import PRELUDE, kernel_dependencies, kernel_source
from tinymlaas.compiler.ir import At, Buffer, CArray, Program, Tensor

__all__ = ["c_identifier", "generate"]

_C_TYPES = {
    "float32": "float",
    "int8": "int8_t",
    "uint8": "uint8_t",
    "int16": "int16_t",
    "uint16": "uint16_t",
    "int32": "int32_t",
    "int64": "int64_t",
}
_PER_LINE = 16


def c_identifier(name: str) -> str:
    """A valid lower-case C identifier from a model name."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name).lower()
    return ident if ident and not ident[0].isdigit() else f"m_{ident}"


def _ctype(dtype: np.dtype) -> str:
    return _C_TYPES[np.dtype(dtype).name]


def _float_literal(value: float) -> str:
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    text = repr(float(np.float32(value)))
    if "e" not in text and "." not in text:
        text += ".0"
    return text + "f"


def _array_literal(array: np.ndarray) -> str:
    flat = array.ravel()
    if flat.dtype == np.float32:
        if not np.all(np.isfinite(flat)):
            items = [_float_literal(float(v)) for v in flat.tolist()]
        else:
            items = [f"{v:.9g}" for v in flat.tolist()]
    else:
        items = [str(int(v)) for v in flat.tolist()]
        if flat.dtype == np.int32:
            items = [s if s != "-2147483648" else "(-2147483647 - 1)" for s in items]
        elif flat.dtype == np.int64:
            items = [f"{s}LL" for s in items]
    lines = [", ".join(items[i:i + _PER_LINE]) for i in range(0, len(items), _PER_LINE)]
    return "{\n  " + ",\n  ".join(lines) + "\n}"


class _Emitter:
    def __init__(self, program: Program, prefix: str) -> None:
        self.program = program
        self.prefix = prefix
        self.const_names: dict[int, str] = {}
        self.table_names: dict[int, str] = {}
        self.decls: list[str] = []

    def const_name(self, buffer: Buffer) -> str:
        key = id(buffer)
        if key not in self.const_names:
            name = f"{self.prefix}_w{len(self.const_names)}"
            data = buffer.data
            assert data is not None
            body = _array_literal(data) if data.size else "{0}"
            size = max(1, data.size)
            self.decls.append(f"static const {_ctype(data.dtype)} {name}[{size}] = {body};")
            self.const_names[key] = name
        return self.const_names[key]

    def table(self, table: CArray) -> str:
        key = id(table)
        if key not in self.table_names:
            name = f"{self.prefix}_p{len(self.table_names)}"
            values = np.ascontiguousarray(table.values)
            size = max(1, values.size)
            body = _array_literal(values) if values.size else "{0}"
            self.decls.append(f"static const {_ctype(values.dtype)} {name}[{size}] = {body};")
            self.table_names[key] = name
        return self.table_names[key]

    def pointer(self, tensor: Tensor, offset: int, written: bool) -> str:
        buffer = tensor.buffer
        qual = "" if written else "const "
        ctype = _ctype(tensor.dtype)
        if buffer.kind == "const":
            base = self.const_name(buffer)
            return base if offset == 0 else f"(({qual}uint8_t*){base} + {offset})"
        if buffer.kind == "arena":
            base = f"{self.prefix}_arena + {buffer.offset + offset}"
        elif buffer.kind == "input":
            base = f"(const uint8_t*)in{buffer.index}" + (f" + {offset}" if offset else "")
        else:
            base = f"(uint8_t*)out{buffer.index}" + (f" + {offset}" if offset else "")
        return f"({qual}{ctype}*)({base})"

    def argument(self, arg: object, written: set[int]) -> str:
        if arg is None:
            return "NULL"
        if isinstance(arg, At):
            return self.pointer(arg.tensor, arg.offset, id(arg) in written)
        if isinstance(arg, Tensor):
            return self.pointer(arg, 0, id(arg) in written)
        if isinstance(arg, CArray):
            return self.table(arg)
        if isinstance(arg, bool | int | np.integer):
            value = int(arg)
            return "(-2147483647 - 1)" if value == -(2**31) else str(value)
        if isinstance(arg, float | np.floating):
            return _float_literal(float(arg))
        raise TypeError(f"cannot pass {type(arg).__name__} to a kernel")


def _io_type(tensor: Tensor) -> str:
    return _ctype(tensor.dtype)


def generate(program: Program, name: str = "model") -> tuple[str, str]:
    """The header and source text of a planned program.

    Args:
        program: A program after :func:`tinymlaas.compiler.planner.plan_program`.
        name: Prefix of every public symbol (``<name>_run``, ``<NAME>_INPUT0_SIZE`` ...).

    Returns:
        ``(header, source)``.
    """
    prefix = c_identifier(name)
    upper = prefix.upper()
    emitter = _Emitter(program, prefix)
    params = [f"const {_io_type(t)}* in{i}" for i, t in enumerate(program.inputs)]
    params += [f"{_io_type(t)}* out{i}" for i, t in enumerate(program.outputs)]
    signature = f"int {prefix}_run({', '.join(params)})"

    body: list[str] = []
    funcs: list[str] = []
    for kernel in program.kernels:
        if kernel.func.startswith("opaque_"):
            raise ValueError(f"cannot generate code for unsupported {kernel.func[7:]}")
        for func in [*kernel_dependencies(kernel.func), kernel.func]:
            if func not in funcs:
                funcs.append(func)
        written = {id(w) for w in kernel.writes}
        args = ", ".join(emitter.argument(a, written) for a in kernel.args)
        if kernel.nodes:
            body.append(f"  /* {', '.join(kernel.nodes)[:110].replace('*/', '* /')} */")
        body.append(f"  {kernel.func}({args});")

    arena = max(program.arena_bytes, 16)
    source = [
        f"/* Generated by tinymlaas: {prefix}. Plain C99, no dynamic memory. */",
        f'#include "{prefix}.h"',
        PRELUDE,
        *[kernel_source(f) for f in funcs],
        "",
        "#if defined(__GNUC__)",
        "#define TM_ALIGNED __attribute__((aligned(16)))",
        "#else",
        "#define TM_ALIGNED",
        "#endif",
        f"/* Activations: {program.arena_bytes} bytes, offsets from the memory planner. */",
        f"static uint8_t {prefix}_arena[{arena}] TM_ALIGNED;",
        "",
    ]
    run = [f"{signature} {{", *body, "  return 0;", "}", ""]
    source += [*emitter.decls, "", *run]

    header = [
        f"/* Generated by tinymlaas: {prefix}. */",
        f"#ifndef {upper}_H",
        f"#define {upper}_H",
        "",
        "#include <stdint.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"#define {upper}_NUM_INPUTS {len(program.inputs)}",
        f"#define {upper}_NUM_OUTPUTS {len(program.outputs)}",
        f"#define {upper}_ARENA_BYTES {program.arena_bytes}",
        f"#define {upper}_CONST_BYTES {program.const_bytes()}",
    ]
    for kind, specs, tensors in (("INPUT", program.input_specs, program.inputs),
                                 ("OUTPUT", program.output_specs, program.outputs)):
        for i, (spec, tensor) in enumerate(zip(specs, tensors, strict=True)):
            tag = f"{upper}_{kind}{i}"
            label = spec.name.replace("*/", "* /")
            header.append(f"/* {kind.lower()} {i}: {label} {list(tensor.shape)} "
                          f"{tensor.dtype.name} */")
            header.append(f"typedef {_io_type(tensor)} {prefix}_{kind.lower()}{i}_t;")
            header.append(f"#define {tag}_SIZE {tensor.size}")
            header.append(f"#define {tag}_RANK {len(tensor.shape)}")
            header.append(f"#define {tag}_DTYPE \"{tensor.dtype.name}\"")
            if spec.scale is not None:
                header.append(f"#define {tag}_SCALE {_float_literal(spec.scale)}")
                header.append(f"#define {tag}_ZERO_POINT {spec.zero_point}")
        if len(tensors) >= 1:
            header.append(f"#define {upper}_{kind}_SIZE {upper}_{kind}0_SIZE")
    header += [
        "",
        "/* Runs one inference; returns 0. Inputs and outputs are caller-owned arrays of the",
        "   sizes above; intermediate results live in one static arena. Not reentrant. */",
        f"{signature};",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        f"#endif /* {upper}_H */",
        "",
    ]
    return "\n".join(header), "\n".join(source)
