"""C99 code generation for a planned :class:`~tinymlaas.compiler.ir.Program`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from tinymlaas.compiler.ir import At, Buffer, CArray, Program, Tensor
from tinymlaas.compiler.kernels import KernelSet, kernel_dependencies, kernel_source, prelude

__all__ = ["SplitSource", "c_identifier", "generate", "io_bytes_expr", "io_declarations",
           "split_source"]

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


def io_declarations(name: str, inputs: int, outputs: int, *, in_arena: bool,
                    names: tuple[str, str] = ("in", "out"),
                    storage: str = "static ") -> tuple[list[str], str]:
    """How a caller of generated code names the model's inputs and outputs, and runs it.

    With the I/O in the arena the names are macros for the arena slots
    (``#define in0 (model_input0())``) and the call is ``model_invoke()``; otherwise they
    are arrays of the right size and the call is ``model_run(in0, ..., out0, ...)``.
    Either way ``in0[i]`` and ``out0[i]`` index the data, and :func:`io_bytes_expr` gives
    the byte size of each (``sizeof`` does not work on the macros).

    Args:
        name: The model's C prefix.
        inputs: Number of inputs.
        outputs: Number of outputs.
        in_arena: Whether the model was compiled with ``io="arena"``.
        names: Prefixes of the input and output names.
        storage: Storage class of the arrays (``"static "`` or ``""``).

    Returns:
        The C lines to put at file scope, and the call expression (0 on success).
    """
    upper = name.upper()
    ins = [(f"{names[0]}{i}", f"input{i}", f"INPUT{i}") for i in range(inputs)]
    outs = [(f"{names[1]}{i}", f"output{i}", f"OUTPUT{i}") for i in range(outputs)]
    if in_arena:
        lines = [f"#define {var} ({name}_{slot}())" for var, slot, _ in [*ins, *outs]]
        return lines, f"{name}_invoke()"
    lines = [f"{storage}{name}_{slot}_t {var}[{upper}_{tag}_SIZE];"
             for var, slot, tag in [*ins, *outs]]
    return lines, f"{name}_run({', '.join(var for var, _, _ in [*ins, *outs])})"


def io_bytes_expr(name: str, kind: str, index: int) -> str:
    """A C expression of the byte size of input or output ``index`` (``kind``)."""
    return f"({name.upper()}_{kind.upper()}{index}_SIZE * sizeof({name}_{kind}{index}_t))"


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
        if buffer.kind == "arena" or buffer.offset >= 0:
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


#: How the layer marks of :func:`generate` expand: to nothing, or to the caller's hook.
_LAYER_HOOK = [
    "#ifdef TM_LAYER_HOOK",
    "void tm_layer_end(int step);",
    "#define TM_LAYER_END(step) tm_layer_end(step)",
    "#else",
    "#define TM_LAYER_END(step) ((void)0)",
    "#endif",
]


def generate(program: Program, name: str = "model", *, kernels: KernelSet = "portable",
             alignment: int = 16, layer_marks: bool = False) -> tuple[str, str]:
    """The header and source text of a planned program.

    Args:
        program: A program after :func:`tinymlaas.compiler.planner.plan_program`.
        name: Prefix of every public symbol (``<name>_run``, ``<NAME>_INPUT0_SIZE`` ...).
        kernels: The kernel set (:mod:`tinymlaas.compiler.kernels`) the kernels come from.
        alignment: Alignment of the arena in bytes (the target's).
        layer_marks: After each kernel call, ``TM_LAYER_END(step)``: nothing, unless the
            source is built with ``-DTM_LAYER_HOOK``; then a call of the caller's
            ``void tm_layer_end(int step)`` (per-layer instruction counts on Cortex-M).

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
    for step, kernel in enumerate(program.kernels):
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
        if layer_marks:
            body.append(f"  TM_LAYER_END({step});")

    arena = max(program.arena_bytes, 16)
    in_arena = program.io == "arena"
    source = [
        f"/* Generated by tinymlaas: {prefix}. Plain C99, no dynamic memory. */",
        f'#include "{prefix}.h"',
        prelude(kernels),
        *[kernel_source(f, kernels) for f in funcs],
        "",
        *(_LAYER_HOOK if layer_marks else []),
        "#if defined(__GNUC__)",
        f"#define TM_ALIGNED __attribute__((aligned({alignment})))",
        "#else",
        "#define TM_ALIGNED",
        "#endif",
        f"/* Activations{', inputs and outputs' if in_arena else ''}: "
        f"{program.arena_bytes} bytes, offsets from the memory planner. */",
        f"static uint8_t {prefix}_arena[{arena}] TM_ALIGNED;",
        "",
    ]
    if in_arena:
        run = [f"int {prefix}_invoke(void) {{", *body, "  return 0;", "}", "",
               *_arena_io(program, prefix, signature)]
    else:
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
        f"/* 1: inputs and outputs live in the arena ({prefix}_input0() ...); 0: the caller's"
        " arrays. */",
        f"#define {upper}_IO_IN_ARENA {int(in_arena)}",
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
    header.append("")
    if in_arena:
        header += [
            "/* Inputs and outputs live in the arena: write each input through",
            f"   {prefix}_inputN(), call {prefix}_invoke() (returns 0), read each output through",
            f"   {prefix}_outputN(). The run overwrites the inputs (their space is reused), so",
            "   write them again before the next run. */",
        ]
        for i in range(len(program.inputs)):
            header.append(f"{prefix}_input{i}_t* {prefix}_input{i}(void);")
        for i in range(len(program.outputs)):
            header.append(f"{prefix}_output{i}_t* {prefix}_output{i}(void);")
        if program.inputs:
            header.append(f"#define {prefix}_input() {prefix}_input0()")
        if program.outputs:
            header.append(f"#define {prefix}_output() {prefix}_output0()")
        header += [
            f"int {prefix}_invoke(void);",
            "",
            "/* Copies the inputs into the arena, runs, copies the outputs out; returns 0.",
            "   Only for callers that keep their own arrays: they cost RAM next to the arena.",
            "   Not reentrant. */",
        ]
    else:
        header += [
            "/* Runs one inference; returns 0. Inputs and outputs are caller-owned arrays of the",
            "   sizes above; intermediate results live in one static arena. Not reentrant. */",
        ]
    header += [
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


def _arena_io(program: Program, prefix: str, signature: str) -> list[str]:
    """Accessors of the arena-resident inputs and outputs, and ``<name>_run`` copying."""
    lines: list[str] = []
    copies_in, copies_out = [], []
    for kind, tensors in (("input", program.inputs), ("output", program.outputs)):
        for i, tensor in enumerate(tensors):
            offset = tensor.buffer.offset
            ctype = f"{prefix}_{kind}{i}_t"
            lines += [f"{ctype}* {prefix}_{kind}{i}(void) {{",
                      f"  return ({ctype}*)({prefix}_arena + {offset});", "}", ""]
            if kind == "input":
                copies_in.append(f"  memcpy({prefix}_arena + {offset}, in{i}, "
                                 f"{tensor.nbytes});")
            else:
                copies_out.append(f"  memcpy(out{i}, {prefix}_arena + {offset}, "
                                  f"{tensor.nbytes});")
    status = f"{prefix}_invoke()"
    lines += [f"{signature} {{", *copies_in, f"  if ({status} != 0) return 1;", *copies_out,
              "  return 0;", "}", ""]
    return lines


_ARENA_MARK = "\n#if defined(__GNUC__)\n#define TM_ALIGNED"
_BYTE_CALL = re.compile(r"^  tm_\w+_b(8|16|32|64)\(.*$", re.MULTILINE)
_TYPED_CAST = re.compile(r"\((const )?(?:float|u?int(?:8|16|32|64)_t)\*\)\(")
_KERNEL_DEF = re.compile(r"^static void (tm_\w+)\(([^{]*?)\)\s*\{", re.MULTILINE)


@dataclass(frozen=True)
class SplitSource:
    """A generated model split into the model and its kernels, as four C99 files."""

    #: ``{file name: text}``: ``<name>.c``, ``<name>_kernels.h``, ``<name>_kernels.c``
    #: (the public ``<name>.h`` is unchanged and not repeated here).
    files: dict[str, str]
    #: The kernels the model calls, with external linkage (renamed ``<name>_k_*``).
    exported: tuple[str, ...]


def _byte_casts(match: re.Match[str]) -> str:
    """Cast the tensors a byte-moving kernel (``tm_*_b8`` ...) gets to its unsigned type,
    so the call compiles warning-free (``-Wpointer-sign``, incompatible pointer types)."""
    bits = match.group(1)
    return _TYPED_CAST.sub(lambda m: f"({m.group(1) or ''}uint{bits}_t*)(", match.group(0))


def split_source(source: str, name: str) -> SplitSource:
    """Split the single-file output of :func:`generate` into model and kernel files.

    The kernels (the prelude and every kernel the model uses) move to
    ``<name>_kernels.c``; those the model calls get external linkage under names made
    unique by the model name (``tm_conv2d_f32`` becomes ``<name>_k_conv2d_f32`` through
    macros in ``<name>_kernels.h``), so several models link into one image. The model
    file keeps the constants, the arena and ``<name>_run``; its arena definition carries
    ``<NAME>_ARENA_ATTR`` (empty unless defined) so the caller can place it in a section.

    Args:
        source: The ``.c`` text from :func:`generate` (or a ``compile-c`` artifact).
        name: The model's C prefix (``CompileResult.name``).

    Returns:
        The three new files' texts and the exported kernel names.

    Raises:
        ValueError: The text is not the output of :func:`generate` for ``name``.
    """
    prefix = c_identifier(name)
    upper = prefix.upper()
    include = f'#include "{prefix}.h"\n'
    start = source.find(include)
    cut = source.find(_ARENA_MARK)
    if start < 0 or cut < start:
        raise ValueError(f"not a tinymlaas-generated source for {prefix!r}")
    kernels = source[start + len(include):cut]
    model = source[cut:]
    model = _BYTE_CALL.sub(_byte_casts, model)
    called = set(re.findall(r"\b(tm_\w+)\(", model))
    exported: list[str] = []
    prototypes: list[str] = []

    def _export(match: re.Match[str]) -> str:
        func, args = match.group(1), match.group(2)
        if func not in called:
            return match.group(0)
        if func not in exported:  # the DSP set defines some twice, under #if TM_DSP / #else
            exported.append(func)
            prototypes.append(f"void {func}({' '.join(args.split())});")
        return match.group(0).removeprefix("static ")

    kernels = _KERNEL_DEF.sub(_export, kernels)
    missing = sorted(called - set(exported))
    if missing:
        raise ValueError(f"kernels called but not defined: {', '.join(missing)}")
    guard = f"{upper}_KERNELS_H"
    header = [
        f"/* Generated by tinymlaas: the kernels {prefix}.c calls. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        "/* Kernel symbols carry the model name, so several models link together. */",
        *[f"#define {f} {prefix}_k_{f.removeprefix('tm_')}" for f in exported],
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        *prototypes,
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        f"#endif /* {guard} */",
        "",
    ]
    kernel_file = [f"/* Generated by tinymlaas: kernels of {prefix}. Plain C99. */",
                   f'#include "{prefix}_kernels.h"', kernels.strip("\n"), ""]
    arena = re.compile(rf"^(static uint8_t {prefix}_arena\[\d+\] TM_ALIGNED);$", re.MULTILINE)
    model, count = arena.subn(rf"\1 {upper}_ARENA_ATTR;", model)
    if count != 1:
        raise ValueError(f"no arena definition for {prefix!r} in the source")
    if f"{prefix}_arena + " not in model:
        # No intermediate tensors: keep -Wunused-variable quiet about the 16-byte arena.
        model = re.sub(rf"^(int {prefix}_run\(.*\) \{{)$", rf"\1\n  (void){prefix}_arena;",
                       model, count=1, flags=re.MULTILINE)
    model_file = [
        f"/* Generated by tinymlaas: {prefix}. Plain C99, no dynamic memory. */",
        include.rstrip("\n"),
        f'#include "{prefix}_kernels.h"',
        "",
        "#include <math.h>",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "#include <string.h>",
        "",
        "/* Placement of the activation arena: define it to e.g.",
        f"   -D{upper}_ARENA_ATTR='__attribute__((section(\".sram2\")))'. */",
        f"#ifndef {upper}_ARENA_ATTR",
        f"#define {upper}_ARENA_ATTR",
        "#endif",
        model.strip("\n"),
        "",
    ]
    files = {f"{prefix}.c": "\n".join(model_file),
             f"{prefix}_kernels.h": "\n".join(header),
             f"{prefix}_kernels.c": "\n".join(kernel_file)}
    return SplitSource(files=files, exported=tuple(exported))
