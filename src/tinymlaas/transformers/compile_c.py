"""``compile-c``: ONNX (float32 or int8 QDQ) to dependency-free C99, checked on the spot.

The output is a directory (``model.h``, ``model.c``, ``model.json``) stored as a
``c-source`` artifact. The generated code is built for this machine and run on calibration
samples against the compiler's exact reference (:mod:`tinymlaas.compiler.reference`: the
same integer arithmetic in numpy, identical on every CPU); below the fidelity bar
(quantized outputs: >= 99 % of elements exact, all within 1 LSB) the step fails. ONNX
Runtime's outputs on the input model are compared too, for information only (``ort_*``
metrics): its int8 kernels differ between CPUs.

``target`` names what the code is for (``host``, ``cortex-m4`` ..., or a device of the
catalog; see :mod:`tinymlaas.compiler.targets`); it picks the kernel set (Cortex-M4, M7,
M33 and M55 get the DSP kernels) unless ``kernels`` says otherwise. For a Cortex-M target
the code is also cross-compiled and the real flash and RAM from the ELF are recorded next
to the planner's figures; a Cortex-M4 build also runs in QEMU and is compared with the
host build. The former ``cortex_m: true`` means ``target: cortex-m4``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
from pydantic import Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from tinymlaas.domain import ArtifactKind
from tinymlaas.transformers.base import CName, Params, StepContext, StepOutput, Transformer


class CompileParams(Params):
    name: CName = Field(default="model", description="C symbol prefix (model_run, MODEL_...).")
    simplify: bool = Field(default=True, description="Simplify the graph (onnxsim) first.")
    fuse_residual: bool = Field(default=True, description="Compute residual adds in place: "
                                "less RAM on ResNet-style blocks, somewhat slower on x86.")
    io: Literal["arena", "caller"] = Field(
        default="arena", description="Where the model's input and output live: 'arena' "
        "(planned into the arena and reused: least RAM; <name>_input0(), <name>_invoke()) "
        "or 'caller' (arrays the caller passes to <name>_run).")
    verify_samples: int = Field(default=32, ge=0, le=10_000, description="Calibration "
                                "samples run on the host build and the exact reference "
                                "(0: skip).")
    target: str = Field(default="host", max_length=64, description="What the code is for: "
                        "host, cortex-m0plus, cortex-m3, cortex-m4, cortex-m7, cortex-m33, "
                        "cortex-m55, or a device of the catalog. A Cortex-M target is also "
                        "cross-compiled (needs gcc-arm-none-eabi) and its ELF's flash and RAM "
                        "recorded; a Cortex-M4 build also runs in QEMU.")
    kernels: Literal["auto", "portable", "cortex-m-dsp"] = Field(
        default="auto", description="Kernel set: 'auto' (the target's: cortex-m-dsp on "
        "CPUs with the DSP extension, else portable), 'portable' or 'cortex-m-dsp'.")
    # The former boolean, still read (true: target cortex-m4) but left out of the schema, so
    # forms and `transformers show` offer `target` only.
    cortex_m: SkipJsonSchema[bool | None] = Field(default=None)

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        from tinymlaas.compiler.targets import get_target

        try:
            get_target(value)
        except Exception as exc:  # InvalidInputError: the message lists the targets
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _fold_cortex_m(self) -> CompileParams:
        from tinymlaas.compiler.targets import get_target

        if self.cortex_m:
            if self.target == "host":
                self.target = "cortex-m4"
            elif not get_target(self.target).cortex_m:
                raise ValueError(f"cortex_m: true asks for a Cortex-M build, but target "
                                 f"{self.target!r} is not a Cortex-M; give only target.")
        self.cortex_m = None
        try:
            get_target(self.target, kernels=self.kernels)
        except Exception as exc:  # a DSP set for a CPU without the extension
            raise ValueError(str(exc)) from None
        return self


class CompileC(Transformer):
    name = "compile-c"
    version = "1"
    summary = "Compile to C99: weights as const arrays, one planned static arena, no malloc."
    Params = CompileParams
    produces = ArtifactKind.c_source
    needs = "calibration"

    def run(self, ctx: StepContext) -> StepOutput:
        from tinymlaas.compiler import HostModel, compile_onnx
        from tinymlaas.compiler.reference import Reference
        from tinymlaas.compiler.verify import (
            agreement,
            check_fidelity,
            output_lsb,
            reference_outputs,
            verify_outputs,
        )
        from tinymlaas.evaluation.runtime import CRunner

        params: CompileParams = ctx.params
        out = ctx.out_dir / "c-source"
        ctx.progress(0.1, "compiling")
        from tinymlaas.compiler.targets import get_target

        target = get_target(params.target, kernels=params.kernels)
        result = compile_onnx(ctx.input_path, out, name=params.name, simplify=params.simplify,
                              fuse_residual=params.fuse_residual, io=params.io, target=target)
        metrics: dict[str, object] = {
            "arena_bytes": result.arena_bytes, "const_bytes": result.const_bytes,
            "io_bytes": result.io_bytes, "macs": result.macs, "kernels": result.kernels,
            "quantized": result.quantized, "target": target.name,
            "kernel_set": target.kernels}
        ctx.log.info("arena %d B, constants %d B, %d kernels", result.arena_bytes,
                     result.const_bytes, result.kernels)
        if params.verify_samples and ctx.dataset is not None:
            ctx.progress(0.4, "verifying against the exact reference")
            model = onnx.load(str(ctx.input_path))
            X, _ = ctx.dataset.split("calibration")
            x = CRunner(out).prepare(X[: params.verify_samples])
            got = HostModel(result).run(x)
            exact = Reference(model, simplify=params.simplify,
                              fuse_residual=params.fuse_residual).run(x)
            checks = verify_outputs(got, exact, model)
            for check in checks:
                ctx.log.info("exact reference: %s", check.describe())
            first = checks[0]
            quantized = [c for c in checks if c.max_lsb_diff is not None]
            metrics.update(
                verify_samples=len(x),
                verify_exact_fraction=min(c.exact_fraction for c in checks),
                verify_max_rel_err=max(c.max_rel_err for c in checks),
                verify_within_1lsb=first.within_1lsb,
                verify_max_lsb_diff=max((c.max_lsb_diff for c in quantized), default=None))
            # Informational, not a gate: the QDQ graph as ONNX specifies it (float, rounding
            # half to even), run by ONNX Runtime without its CPU-dependent int8 kernels.
            first_out = got[0] if isinstance(got, tuple) else got
            ort = np.asarray(reference_outputs(model, x, optimize=False)[0])
            info = agreement(first_out, ort.reshape(first_out.shape), lsb=output_lsb(model))
            metrics.update(ort_max_rel_err=info.max_rel_err,
                           ort_within_1lsb=info.fraction_within_1lsb)
            ctx.log.info("informational (not a gate), ONNX Runtime on the graph as "
                         "specified: %s", info)
            check_fidelity(checks)
        if target.cpu == "cortex-m4":
            from tinymlaas.compiler.cortex_m import run_cortex_m
            from tinymlaas.evaluation.runtime import CRunner

            ctx.progress(0.7, "cross-compiling for Cortex-M4 and running it in QEMU")
            X, _ = ctx.require_dataset().split("calibration")
            x = CRunner(out).prepare(X[:2])
            build = run_cortex_m(result, [x], ctx.work_dir / "cortex-m")
            host = np.asarray(HostModel(result).run(x))
            on_target = np.stack([sample[0] for sample in build.outputs]).reshape(host.shape)
            metrics.update(elf_flash_bytes=build.sizes.flash_bytes,
                           elf_ram_bytes=build.sizes.ram_bytes,
                           code_overhead_bytes=build.code_overhead_bytes,
                           qemu_max_abs_diff_to_host=float(np.max(np.abs(
                               on_target.astype(np.float64) - host))))
        elif target.cortex_m:
            from tinymlaas.compiler.cortex_m import build_cortex_m

            ctx.progress(0.7, f"cross-compiling for {target.name}")
            samples = [np.zeros((1, *spec.shape), spec.dtype) for spec in result.inputs]
            build = build_cortex_m(result, samples, ctx.work_dir / "cortex-m",
                                   flags=target.cflags)
            metrics.update(elf_flash_bytes=build.sizes.flash_bytes,
                           elf_ram_bytes=build.sizes.ram_bytes,
                           code_overhead_bytes=build.code_overhead_bytes)
        return StepOutput(out, self.produces, metrics)
