"""The compiler's entry point: ONNX file in, C99 source files out."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
from pydantic import BaseModel, Field, ValidationError

from tinymlaas.compiler.codegen import c_identifier, generate
from tinymlaas.compiler.ir import IOSpec, Program
from tinymlaas.compiler.loader import load_model, prepare
from tinymlaas.compiler.lower import lower
from tinymlaas.compiler.planner import IOMode, outside_bytes, plan_program
from tinymlaas.compiler.targets import Target, get_target
from tinymlaas.domain import Device
from tinymlaas.errors import InvalidInputError

__all__ = ["CompileResult", "build_program", "compile_onnx"]

META_FILE = "model.json"


class CompileResult(BaseModel):
    """What :func:`compile_onnx` produced and what the planner knows about it."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                      description="C symbol prefix: <name>_run, <NAME>_INPUT0_SIZE ...")
    directory: Path
    header: Path
    source: Path
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    arena_bytes: int = Field(description="static activation arena (RAM), from the planner")
    const_bytes: int = Field(description="weights, biases and tables kept in flash")
    io_bytes: int = Field(description="bytes of the input and output arrays outside the "
                          "arena (0 when they live in it)")
    io: IOMode = Field(default="caller", description="where inputs and outputs live: "
                       "'arena' (<name>_input0() ..., <name>_invoke()) or 'caller' (arrays "
                       "passed to <name>_run); sources from before the option are 'caller'")
    macs: int
    kernels: int
    operators: dict[str, int] = Field(description="ONNX operator counts of the prepared graph")
    kernel_calls: dict[str, int] = Field(description="generated kernel calls by kernel")
    quantized: bool = Field(description="whether any integer (fixed-point) kernel is used")
    target: str = Field(default="host", description="the target compiled for "
                        "(tinymlaas.compiler.targets); sources from before targets: 'host'")
    kernel_set: str = Field(default="portable", description="the kernel set the kernels "
                            "come from: 'portable' or 'cortex-m-dsp'")
    layer_marks: bool = Field(default=False, description="whether each kernel call is "
                              "followed by TM_LAYER_END(step) (per-layer counts)")

    def write_meta(self) -> Path:
        """Store this result next to the sources (``model.json``).

        The paths in it are relative to the directory (``.``, ``model.h``, ``model.c``): the
        sources move (artifact store, export, device), and :meth:`read_meta` re-anchors them.
        """
        path = self.directory / META_FILE
        portable = self.model_copy(update={"directory": Path("."),
                                           "header": Path(self.header.name),
                                           "source": Path(self.source.name)})
        path.write_text(portable.model_dump_json(indent=2), encoding="utf-8")
        return path

    @classmethod
    def read_meta(cls, directory: str | Path) -> CompileResult:
        """Load the result stored by :meth:`write_meta` from a source directory."""
        directory = Path(directory)
        try:
            result = cls.model_validate_json((directory / META_FILE).read_bytes())
        except ValidationError as exc:  # also a hand-made or tampered file
            raise InvalidInputError(f"{META_FILE} does not describe compiled C sources: "
                                    f"{exc.errors()[0]['loc']} {exc.errors()[0]['msg']}") \
                from None
        return result.model_copy(update={
            "directory": directory,
            "header": directory / result.header.name,
            "source": directory / result.source.name,
        })


def build_program(
    model: str | Path | onnx.ModelProto,
    *,
    strict: bool = True,
    simplify: bool = True,
    fuse_residual: bool = True,
    io: IOMode = "arena",
) -> tuple[Program, onnx.ModelProto]:
    """Load, prepare, lower and plan a model without writing anything.

    Args:
        model: Path of an ``.onnx`` file or a loaded model.
        strict: Raise on unsupported operators (see :func:`tinymlaas.compiler.lower.lower`).
        simplify: Run ``onnxsim`` on float graphs first.
        fuse_residual: Fuse residual ``Add`` nodes into convolutions (saves RAM).
        io: Plan the model's inputs and outputs into the arena (``"arena"``) or leave
            them to the caller (``"caller"``).

    Returns:
        The planned program and the prepared model.
    """
    prepared, shapes = prepare(load_model(model), simplify=simplify)
    program = lower(prepared, shapes, strict=strict, fuse_residual=fuse_residual)
    plan_program(program, io)
    return program, prepared


def compile_onnx(
    model_path: str | Path | onnx.ModelProto,
    out_dir: str | Path,
    *,
    name: str = "model",
    simplify: bool = True,
    fuse_residual: bool = True,
    io: IOMode = "arena",
    target: str | Target | Device | None = None,
    kernels: str | None = None,
    layer_marks: bool = False,
) -> CompileResult:
    """Compile an ONNX model to C99 ``<name>.h`` and ``<name>.c``.

    The generated code keeps weights in ``const`` arrays (flash), all intermediate results
    in one static arena sized by the memory planner, and needs only libc and libm. By
    default the inputs and outputs live in the arena too: the caller writes the inputs
    through ``<name>_input0()`` ..., calls ``int <name>_invoke(void)`` and reads the
    outputs through ``<name>_output0()`` .... ``int <name>_run(const in0_t* in0, ...,
    out0_t* out0, ...)`` exists in both modes (with ``io="arena"`` it copies).

    Args:
        model_path: The ``.onnx`` file (float, or int8 QDQ) or a loaded model. A symbolic
            batch dimension is compiled as 1.
        out_dir: Directory for the sources (created if needed).
        name: Prefix of the generated symbols and the file names.
        simplify: Run ``onnxsim`` on float graphs first.
        fuse_residual: Compute a residual ``Add`` inside the convolution feeding it, so
            that convolution's output never takes arena space (ResNet-style blocks need
            about a third less RAM; on hosts with vector units it can run slower).
        io: ``"arena"``: inputs and outputs are planned into the arena, their space reused
            once they are dead (least RAM); ``"caller"``: they stay in the caller's arrays.
        target: What the code is for (:func:`tinymlaas.compiler.targets.get_target`): a
            target name (``"host"``, the default; ``"cortex-m4"`` ...), a catalog device
            name, a device profile or a :class:`~tinymlaas.compiler.targets.Target`. It
            picks the kernel set: Cortex-M4/M7/M33/M55 get the DSP kernels.
        kernels: Override the target's kernel set (``"portable"`` or ``"cortex-m-dsp"``);
            ``None`` or ``"auto"`` keeps it. Every set gives bit-identical outputs.
        layer_marks: Mark the end of each kernel call (``TM_LAYER_END(step)``, empty
            unless built with ``-DTM_LAYER_HOOK``), for
            :func:`tinymlaas.compiler.instructions.measure_layer_instructions`.

    Returns:
        The file paths, I/O specifications and planner figures.

    Raises:
        UnsupportedModelError: Operators, attributes or dtypes the compiler cannot handle;
            ``details["nodes"]`` names the nodes. Nothing is written in that case.
        InvalidInputError: The file is not a readable ONNX model, or an unknown target or
            a kernel set the target cannot run.
    """
    chosen = get_target(target, kernels=kernels)
    program, prepared = build_program(model_path, simplify=simplify,
                                      fuse_residual=fuse_residual, io=io)
    prefix = c_identifier(name)
    header_text, source_text = generate(program, prefix, kernels=chosen.kernels,
                                        alignment=chosen.alignment, layer_marks=layer_marks)
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    header = directory / f"{prefix}.h"
    source = directory / f"{prefix}.c"
    header.write_text(header_text, encoding="utf-8")
    source.write_text(source_text, encoding="utf-8")
    calls = Counter(k.func for k in program.kernels)
    result = CompileResult(
        name=prefix,
        directory=directory,
        header=header,
        source=source,
        inputs=program.input_specs,
        outputs=program.output_specs,
        arena_bytes=program.arena_bytes,
        const_bytes=program.const_bytes(),
        io_bytes=outside_bytes(program),
        io=program.io,
        macs=program.macs(),
        kernels=len(program.kernels),
        operators=dict(Counter(n.op_type for n in prepared.graph.node)),
        kernel_calls=dict(calls),
        quantized=any(f.startswith(("tm_q", "tm_lut", "tm_requant")) for f in calls),
        target=chosen.name,
        kernel_set=chosen.kernels,
        layer_marks=layer_marks,
    )
    result.write_meta()
    return result
