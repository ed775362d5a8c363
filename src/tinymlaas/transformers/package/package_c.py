"""``package-c``: a self-contained C library bundle for a device project.

From an ONNX model (compiled here) or a ``compile-c`` output, writes the model and its
kernels as separate C99 files, a Makefile (host build, Cortex-M firmware, QEMU run), a
CMakeLists.txt, an example, a QEMU port, Arduino / Zephyr / PlatformIO wrappers and a
``manifest.json`` with file hashes, tensors, memory figures and the target. The run's
device, when given, is the recorded target: a Cortex-M device picks its own ``-mcpu``
flags, anything else is measured as a Cortex-M4. See
:mod:`tinymlaas.installers.c_bundle` for the layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from tinymlaas.artifacts import sha256_file
from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import InvalidInputError
from tinymlaas.transformers.base import CName, Params, StepContext, StepOutput, Transformer

__all__ = ["PackageC", "PackageCParams"]


class PackageCParams(Params):
    name: CName = Field(default="model", description="C symbol prefix (model_run, MODEL_...) "
                      "for ONNX input; a compile-c input keeps its own.")
    version: str = Field(default="1.0.0", description="Library version in the Arduino and "
                         "PlatformIO wrappers (MAJOR.MINOR.PATCH).")
    author: str = Field(default="tinymlaas", min_length=1, max_length=100,
                        description="Author and maintainer in the wrappers' metadata.")
    url: str = Field(default="", max_length=300, description="The library's web page "
                     "(Arduino url, PlatformIO homepage); empty leaves it blank.")
    simplify: bool = Field(default=True, description="Simplify float graphs (onnxsim) first.")
    fuse_residual: bool = Field(default=True, description="Compute residual adds in place "
                                "(less RAM on ResNet-style blocks).")
    io: Literal["arena", "caller"] = Field(
        default="arena", description="When compiling an ONNX model: its input and output in "
        "the arena ('arena', least RAM) or in the caller's arrays ('caller').")
    measure_elf: bool = Field(default=True, description="Link the model for the target with "
                              "arm-none-eabi-gcc and record the ELF's section sizes.")


    @field_validator("author", "url")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(ch in value for ch in "\r\n\"\\") or not value.isprintable():
            raise ValueError("must be one printable line without quotes or backslashes")
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not re.fullmatch(r"\d{1,6}\.\d{1,6}\.\d{1,6}", value):
            raise ValueError("must be MAJOR.MINOR.PATCH, e.g. 1.0.0")
        return value


class PackageC(Transformer):
    name = "package-c"
    version = "1"
    summary = ("C library bundle: model and kernels as C99 files, Makefile/CMake, example, "
               "QEMU port, Arduino/Zephyr/PlatformIO wrappers, manifest with hashes and sizes.")
    Params = PackageCParams
    accepts = frozenset({ArtifactKind.onnx, ArtifactKind.c_source})
    produces = ArtifactKind.c_bundle
    needs = "none"
    uses_device = True

    def run(self, ctx: StepContext) -> StepOutput:
        from tinymlaas.compiler.api import CompileResult, compile_onnx
        from tinymlaas.installers.c_bundle import target_for, write_bundle

        params: PackageCParams = ctx.params
        if ctx.input_kind is ArtifactKind.c_source:
            directory = Path(ctx.input_path)
            if not (directory / "model.json").is_file():
                raise InvalidInputError("The c-source input has no model.json; make it with "
                                        "the compile-c step.")
            compiled = CompileResult.read_meta(directory)
            source = {"kind": "c-source", "file": compiled.source.name,
                      "sha256": sha256_file(compiled.source)}
        else:
            ctx.progress(0.1, "compiling")
            compiled = compile_onnx(ctx.input_path, ctx.work_dir / "compiled", name=params.name,
                                    simplify=params.simplify,
                                    fuse_residual=params.fuse_residual, io=params.io)
            source = {"kind": "onnx", "file": Path(ctx.input_path).name,
                      "sha256": sha256_file(Path(ctx.input_path))}
        target = target_for(ctx.device)
        ctx.progress(0.5, f"writing the bundle, measuring for {target.cpu}")
        out = ctx.out_dir / "c-bundle"
        manifest = write_bundle(compiled, out, target=target, source=source,
                                work_dir=ctx.work_dir, version=params.version,
                                author=params.author, url=params.url,
                                measure=params.measure_elf)
        elf = manifest["elf"]
        metrics: dict[str, object] = {
            "arena_bytes": compiled.arena_bytes, "const_bytes": compiled.const_bytes,
            "estimated_flash_bytes": manifest["memory"]["estimate"]["flash_bytes"],
            "estimated_ram_bytes": manifest["memory"]["estimate"]["ram_bytes"],
            "target_cpu": target.cpu, "elf_measured": bool(elf.get("measured")),
            "files": len(manifest["files"]) + 1}
        if elf.get("measured"):
            metrics.update(elf_flash_bytes=elf["flash_bytes"], elf_ram_bytes=elf["ram_bytes"])
            ctx.log.info("%s ELF: flash %d B, RAM %d B", target.cpu, elf["flash_bytes"],
                         elf["ram_bytes"])
        else:
            ctx.log.warning("ELF not measured: %s", elf.get("reason"))
        return StepOutput(out, self.produces, metrics)
