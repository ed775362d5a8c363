"""A self-contained C library bundle of a compiled model, ready for a device project.

Layout of the bundle (``<name>`` is the model's C prefix, ``<Name>`` its CamelCase)::

    manifest.json               SHA-256 of every other file, source model hash, memory
                                figures, tensors, target, ELF size report, generator
    README.md                   integration snippet, arena placement, how to build
    CMakeLists.txt              static library target <name> (+ example when top level)
    Makefile                    make host | make firmware [CPU=] | make qemu INPUT=file |
                                make riscv-firmware | make riscv INPUT=file (rv32imc)
    src/<name>.h src/<name>.c   the model: const weights, one static arena, <name>_run()
    src/<name>_kernels.h/.c     the kernels it calls, as a real C file (<name>_k_* symbols)
    examples/main.c             reads argv[1] (raw input bytes), prints the outputs
    port/cortex-m/startup.c     QEMU MPS2/MPS3 startup (semihosting argv and file I/O)
    port/cortex-m/link.ld       linker script for those boards
    port/riscv/link.ld          QEMU virt memory map for rv32imc (includes picolibc.ld)
    port/riscv/stdio.c          stdout/stderr to the host's through semihosting (picolibc)
    wrappers/arduino/<Name>/    Arduino library (library.properties, src/, example sketch)
    wrappers/zephyr/<name>/     Zephyr module (zephyr/module.yml, CMakeLists.txt, Kconfig)
    wrappers/platformio/<name>/ PlatformIO library (library.json, src/, example)

Every wrapper is self-contained: it holds copies of the four model sources.

The arena definition carries ``<NAME>_ARENA_ATTR`` (empty by default), so a project
places it with e.g. ``-D<NAME>_ARENA_ATTR='__attribute__((section(".sram2")))'``.

When ``arm-none-eabi-gcc`` is installed, the model is linked for the target CPU into a
minimal firmware (startup, the model, static input and output buffers, a ``main`` that
calls ``<name>_run``) and the section sizes of that ELF go into the manifest next to the
estimate (constants + a per-kernel code estimate; arena + I/O buffers).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from tinymlaas.artifacts import sha256_file
from tinymlaas.compiler.api import CompileResult
from tinymlaas.compiler.codegen import io_bytes_expr, io_declarations, split_source
from tinymlaas.compiler.kernels import split_func
from tinymlaas.compiler.targets import TARGETS
from tinymlaas.domain import Device
from tinymlaas.errors import InvalidInputError, StepFailedError
from tinymlaas.installers.wrappers import AUTHOR, camel_case, write_wrappers

__all__ = [
    "CPU_FLAGS",
    "DEFAULT_CPU",
    "QEMU_MACHINES",
    "Target",
    "estimate_memory",
    "file_hashes",
    "measure_elf",
    "render",
    "target_for",
    "write_bundle",
]

#: GCC flags of each Cortex-M the Makefile knows: the compiler targets' (keep in step with
#: Makefile.tmpl).
CPU_FLAGS: dict[str, tuple[str, ...]] = {
    name: target.cflags for name, target in TARGETS.items() if target.cortex_m}
#: QEMU boards that run the example for a CPU.
QEMU_MACHINES: dict[str, str] = {
    "cortex-m3": "mps2-an385",
    "cortex-m4": "mps2-an386",
    "cortex-m7": "mps2-an500",
}
DEFAULT_CPU = "cortex-m4"
_ARCH_ALIASES = {"cortex-m0": "cortex-m0plus", "cortex-m0+": "cortex-m0plus",
                 "cortex-m4f": "cortex-m4", "cortex-m7f": "cortex-m7"}
GCC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"
_FILES = "tinymlaas.installers.files.c"

# Code estimate (bytes of Thumb-2 at -Os, measured on Cortex-M4 builds of single kernels):
# startup, vectors, memcpy/memset and a minimal main; each distinct kernel (by base name,
# unlisted ones count _KERNEL_DEFAULT); each call site in <name>_run (convolutions pass
# about 25 arguments); and the libm / libgcc routines kernels pull in, counted once.
_CODE_BASE = 690
_CALL_BYTES = 50
_CONV_CALL_BYTES = 90
_KERNEL_DEFAULT = 400
_KERNEL_BYTES: dict[str, int] = {
    "conv2d": 452, "conv2d_add": 464, "convtile": 360, "qconv2d": 580, "qconv2d_add": 1122,
    "gemm": 650, "qgemm": 300, "matmul": 162, "maxpool": 374, "avgpool": 564,
    "qavgpool": 800, "gap": 64, "reduce_mean": 144, "softmax": 224, "qsoftmax": 260,
    "qadd": 688, "qmul": 400, "clamp": 34, "cliprt": 64, "lut": 24, "quantize": 192,
    "dequantize": 116, "requant": 188, "batchnorm": 172, "transpose": 120, "copy2d": 48,
    "qsoftmax_tfl": 1600, "remap": 160,
}
# CPUs without an FPU link libgcc's soft-float routines: add, multiply, compares and
# conversions for any float arithmetic (int8 kernels too: softmax, rounding), division and
# the rest for the kernels below. (basic, division) bytes per CPU.
_SOFT_FLOAT_BYTES: dict[str, tuple[int, int]] = {"cortex-m0plus": (2450, 1250),
                                                 "cortex-m3": (1100, 450)}
_FLOAT_INT8_KERNELS = frozenset({"qsoftmax", "quantize", "dequantize"})
_DIVIDING_KERNELS = frozenset({"softmax", "qsoftmax", "quantize", "avgpool", "gap",
                               "reduce_mean", "batchnorm", "unary_sigmoid", "unary_tanh",
                               "unary_reciprocal", "unary_hardswish", "unary_softsign",
                               "binary_div"})
_UNARY_BYTES = 50
_BINARY_BYTES = 290
_LIBRARY_BYTES = {"expf": 720, "tanhf": 850, "rintf": 184, "ldivmod": 700, "logf": 600,
                  "erff": 900, "sqrtf": 40}
# newlib's reentrancy data (errno), linked with any libm function that can set errno.
_ERRNO_DATA_BYTES = 104
_ERRNO_SETTERS = frozenset({"expf", "tanhf", "logf", "erff"})
_LIBRARY_USERS = {
    "qavgpool": ("ldivmod",), "qsoftmax": ("rintf",), "quantize": ("rintf",),
    "softmax": ("expf",), "unary_sigmoid": ("expf",), "unary_exp": ("expf",),
    "unary_elu": ("expf",), "unary_softplus": ("expf", "logf"), "unary_tanh": ("tanhf",),
    "unary_log": ("logf",), "unary_erf": ("erff",), "batchnorm": ("sqrtf",),
}


@dataclass(frozen=True)
class Target:
    """The CPU a bundle is measured for and recorded as its target."""

    device: str | None
    arch: str | None
    cpu: str
    cflags: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"device": self.device, "arch": self.arch, "cpu": self.cpu,
                "cflags": list(self.cflags), "qemu_machine": QEMU_MACHINES.get(self.cpu)}


def target_for(device: Device | None) -> Target:
    """The target of a run's device: its own Cortex-M, else a Cortex-M4.

    Args:
        device: The run's device, or None.

    Returns:
        The device name and arch as recorded, and the CPU and flags used.
    """
    arch = device.arch.lower() if device is not None else None
    cpu = _ARCH_ALIASES.get(arch or "", arch or "")
    if cpu not in CPU_FLAGS:
        cpu = DEFAULT_CPU
    return Target(device=device.name if device is not None else None,
                  arch=device.arch if device is not None else None,
                  cpu=cpu, cflags=CPU_FLAGS[cpu])


def render(template: str, values: dict[str, object]) -> str:
    """Fill ``@@key@@`` placeholders of a packaged template (``files/c/<template>.tmpl``).

    Raises:
        KeyError: A placeholder has no value.
    """
    text = resources.files(_FILES).joinpath(f"{template}.tmpl").read_text("utf-8")

    def _value(match: re.Match[str]) -> str:
        return str(values[match.group(1)])

    return re.sub(r"@@(\w+)@@", _value, text)


def file_hashes(directory: Path, *, skip: tuple[str, ...] = ("manifest.json",)) -> dict[str, str]:
    """SHA-256 of every file under ``directory`` (POSIX relative paths, sorted)."""
    hashes = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel not in skip:
            hashes[rel] = sha256_file(path)
    return hashes


def _kernel_base(func: str) -> str:
    """``tm_qconv2d_s8s8`` -> ``qconv2d``; untyped kernels (``tm_copy2d``) keep their name."""
    base, types = split_func(func)
    return base if types else func.removeprefix("tm_")


def estimate_memory(compiled: CompileResult, cpu: str = DEFAULT_CPU) -> dict[str, int]:
    """Flash and RAM of the model linked alone: constants + code, arena + I/O buffers.

    Args:
        compiled: The compiled model (constants, arena, kernel calls).
        cpu: A key of :data:`CPU_FLAGS`; CPUs without an FPU add the soft-float routines.
    """
    convs = ("conv2d", "conv2d_add", "qconv2d", "qconv2d_add")
    code = _CODE_BASE
    for func, calls in compiled.kernel_calls.items():
        code += calls * (_CONV_CALL_BYTES if _kernel_base(func) in convs else _CALL_BYTES)
    bases = {_kernel_base(func) for func in compiled.kernel_calls}
    if bases & set(convs):
        bases.add("convtile")
    libraries: set[str] = set()
    for base in bases:
        libraries.update(_LIBRARY_USERS.get(base, ()))
        if base.startswith("unary_"):
            code += _UNARY_BYTES
        elif base.startswith("binary_"):
            code += _BINARY_BYTES
        else:
            code += _KERNEL_BYTES.get(base, _KERNEL_DEFAULT)
    code += sum(_LIBRARY_BYTES[name] for name in libraries)
    basic, division = _SOFT_FLOAT_BYTES.get(cpu, (0, 0))
    if any("f32" in split_func(f)[1] for f in compiled.kernel_calls) or \
            bases & _FLOAT_INT8_KERNELS:
        code += basic + (division if bases & _DIVIDING_KERNELS else 0)
    data = _ERRNO_DATA_BYTES if libraries & _ERRNO_SETTERS else 0
    return {"code_bytes": code, "flash_bytes": compiled.const_bytes + code + data,
            "ram_bytes": compiled.arena_bytes + compiled.io_bytes + data}


def _c_type(dtype: str) -> tuple[str, str]:
    """printf format and cast for one output element."""
    if dtype.startswith("float"):
        return "%.9g", "(double)"
    if dtype == "int64":
        return "%lld", "(long long)"
    if dtype in ("int32", "uint32"):
        return "%ld", "(long)"
    return "%d", "(int)"


def _example(compiled: CompileResult) -> str:
    name = compiled.name
    buffers, call = io_declarations(name, len(compiled.inputs), len(compiled.outputs),
                                    in_arena=compiled.io == "arena")
    sizes = [io_bytes_expr(name, "input", i) for i in range(len(compiled.inputs))]
    reads = " && ".join(f"fread(in{i}, {size}, 1, file) == 1"
                        for i, size in enumerate(sizes)) or "1"
    size = " + ".join(sizes) or "0"
    upper = name.upper()
    prints = []
    for i, spec in enumerate(compiled.outputs):
        fmt, cast = _c_type(spec.dtype)
        prints += [f"  for (i = 0; i < {upper}_OUTPUT{i}_SIZE; ++i) {{",
                   f'    printf("%s{fmt}", sep, {cast}out{i}[i]);',
                   '    sep = " ";',
                   "  }"]
    return render("main.c", {"name": name, "buffers": "\n".join(buffers), "reads": reads,
                             "input_bytes": size, "run_call": call,
                             "prints": "\n".join(prints)})


def _integration(compiled: CompileResult) -> str:
    """The README's C snippet: fill the input(s), run, read the output(s)."""
    name = compiled.name
    if compiled.io == "arena":
        return "\n".join([
            f'#include "{name}.h"', "",
            "int infer(void) {",
            f"  {name}_input0_t* input = {name}_input0();   /* a slot in the arena */",
            "  /* write the input here (the quantization of each tensor is in "
            f"{name}.h and manifest.json) */",
            f"  if ({name}_invoke() != 0) return 1;",
            f"  const {name}_output0_t* output = {name}_output0();",
            "  /* read the output here, before the next run */",
            "  return 0;", "}"])
    buffers, call = io_declarations(name, len(compiled.inputs), len(compiled.outputs),
                                    in_arena=False)
    return "\n".join([
        f'#include "{name}.h"', "", *buffers, "",
        "int infer(void) {",
        "  /* fill in0 ... (the quantization of each tensor is in "
        f"{name}.h and manifest.json) */",
        f"  return {call}; /* 0 on success */", "}"])


def _tensor_json(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype,
            "scale": spec.scale, "zero_point": spec.zero_point}


def _describe(specs: list[Any]) -> str:
    return "; ".join(f"`{s.name}` {s.dtype} {list(s.shape)}"
                     + (f" (scale {s.scale:.6g}, zero point {s.zero_point})"
                        if s.scale is not None else "") for s in specs)


def _write_sources(compiled: CompileResult, src: Path) -> None:
    source = compiled.source.read_text(encoding="utf-8")
    try:
        split = split_source(source, compiled.name)
    except ValueError as exc:
        raise InvalidInputError(f"{compiled.source.name} is not a tinymlaas-generated model "
                                f"source ({exc}); compile the model again with compile-c.") from exc
    src.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(compiled.header, src / f"{compiled.name}.h")
    for file_name, text in sorted(split.files.items()):
        (src / file_name).write_text(text, encoding="utf-8")


def _generator_version() -> str:
    try:
        return metadata.version("tinymlaas")
    except metadata.PackageNotFoundError:  # pragma: no cover - source checkout only
        return "unknown"


def measure_elf(bundle: Path, compiled: CompileResult, target: Target,
                work_dir: Path) -> dict[str, Any]:
    """Link the bundle's model into a minimal firmware for the target and size it.

    Args:
        bundle: The bundle directory (its ``src/`` and ``port/``).
        compiled: The compiled model (its name and tensors).
        target: CPU and flags.
        work_dir: Where the probe sources and the ELF go.

    Returns:
        ``{"measured": True, "text", "data", "bss", "flash_bytes", "ram_bytes",
        "sections", "toolchain", "cpu"}``, or ``{"measured": False, "reason"}`` when
        ``arm-none-eabi-gcc`` is not installed.

    Raises:
        StepFailedError: The firmware did not build.
    """
    if shutil.which(GCC) is None or shutil.which(SIZE) is None:
        return {"measured": False, "reason": "arm-none-eabi-gcc is not installed (Debian: "
                "gcc-arm-none-eabi libnewlib-arm-none-eabi); the ELF was not built"}
    from tinymlaas.compiler.cortex_m import elf_sizes

    name = compiled.name
    work_dir.mkdir(parents=True, exist_ok=True)
    probe = work_dir / "probe.c"
    probe.write_text(_probe_main(compiled), encoding="utf-8")
    startup = resources.files("tinymlaas.compiler.targets").joinpath("startup.c")
    (work_dir / "startup.c").write_text(startup.read_text("utf-8"), encoding="utf-8")
    elf = work_dir / f"{name}-{target.cpu}.elf"
    command = [GCC, *target.cflags, "-Os", "-std=c99", "-ffunction-sections", "-fdata-sections",
               "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections",
               f"-T{bundle / 'port' / 'cortex-m' / 'link.ld'}", "-I", str(bundle / "src"),
               str(work_dir / "startup.c"), str(probe), str(bundle / "src" / f"{name}.c"),
               str(bundle / "src" / f"{name}_kernels.c"), "-lm", "-o", str(elf)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StepFailedError(f"The {target.cpu} firmware did not build:\n{proc.stderr[-3000:]}",
                              {"stderr": proc.stderr[-3000:]})
    berkeley = subprocess.run([SIZE, str(elf)], capture_output=True, text=True, check=True)
    text, data, bss = (int(v) for v in berkeley.stdout.splitlines()[1].split()[:3])
    sizes = elf_sizes(elf)
    version = subprocess.run([GCC, "-dumpversion"], capture_output=True, text=True,
                             check=False).stdout.strip()
    return {"measured": True, "cpu": target.cpu, "toolchain": f"{GCC} {version}",
            "text": text, "data": data, "bss": bss, "flash_bytes": sizes.flash_bytes,
            "ram_bytes": sizes.ram_bytes,
            "sections": {k: v for k, v in sorted(sizes.sections.items())
                         if not k.startswith((".debug", ".comment", ".ARM.attributes"))}}


def _probe_main(compiled: CompileResult) -> str:
    """A main that only runs the model (on static buffers, unless its input and output
    live in the arena): what a device adds at least."""
    name = compiled.name
    buffers, call = io_declarations(name, len(compiled.inputs), len(compiled.outputs),
                                    in_arena=compiled.io == "arena")
    lines = [f'#include "{name}.h"', "", *buffers]
    lines += ["", f"int main(void) {{ return {call}; }}", ""]
    return "\n".join(lines)


def write_bundle(
    compiled: CompileResult,
    out_dir: Path,
    *,
    target: Target,
    source: dict[str, Any],
    work_dir: Path,
    version: str = "1.0.0",
    author: str = AUTHOR,
    url: str = "",
    measure: bool = True,
) -> dict[str, Any]:
    """Write the bundle for a compiled model and return its manifest.

    Args:
        compiled: The compiled model (its ``<name>.c``/``.h`` and figures).
        out_dir: The bundle directory to create (must not exist or be empty).
        target: The target recorded in the manifest and measured.
        source: What the bundle was made from (``kind``, ``sha256``, ``file``).
        work_dir: Scratch space (the size-probe firmware).
        version: The library version written into the framework wrappers.
        author: Author and maintainer written into the framework wrappers.
        url: The library's web page for the wrappers (may be empty).
        measure: Build the size-probe ELF when the toolchain is there.

    Returns:
        The manifest, also written as ``manifest.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    name = compiled.name
    _write_sources(compiled, out_dir / "src")
    (out_dir / "examples").mkdir(exist_ok=True)
    (out_dir / "examples" / "main.c").write_text(_example(compiled), encoding="utf-8")
    port = out_dir / "port" / "cortex-m"
    port.mkdir(parents=True, exist_ok=True)
    (port / "startup.c").write_text(render("startup.c", {}), encoding="utf-8")
    (port / "link.ld").write_text(render("link.ld", {}), encoding="utf-8")
    riscv = out_dir / "port" / "riscv"
    riscv.mkdir(parents=True, exist_ok=True)
    (riscv / "link.ld").write_text(render("riscv_link.ld", {}), encoding="utf-8")
    (riscv / "stdio.c").write_text(render("riscv_stdio.c", {}), encoding="utf-8")
    values: dict[str, object] = {
        "name": name, "NAME": name.upper(), "Name": camel_case(name), "cpu": target.cpu,
        "arena_bytes": compiled.arena_bytes, "const_bytes": compiled.const_bytes,
        "inputs": _describe(compiled.inputs), "outputs": _describe(compiled.outputs),
        "target": f"{target.device or 'no device'} ({target.cpu}, {' '.join(target.cflags)})",
        "integrate": _integration(compiled),
    }
    (out_dir / "Makefile").write_text(render("Makefile", values), encoding="utf-8")
    (out_dir / "CMakeLists.txt").write_text(render("CMakeLists.txt", values), encoding="utf-8")
    (out_dir / "README.md").write_text(render("README.md", values), encoding="utf-8")
    write_wrappers(out_dir, compiled, version=version, author=author, url=url)
    elf = (measure_elf(out_dir, compiled, target, work_dir / "elf") if measure
           else {"measured": False, "reason": "not requested"})
    estimate = estimate_memory(compiled, target.cpu)
    if elf.get("measured"):
        elf["flash_vs_estimate"] = round(elf["flash_bytes"] / estimate["flash_bytes"], 4)
        elf["ram_vs_estimate"] = round(elf["ram_bytes"] / max(1, estimate["ram_bytes"]), 4)
    manifest = {
        "format": "tinymlaas-c-bundle/1",
        "name": name,
        "generator": {"name": "tinymlaas package-c", "version": _generator_version()},
        "source_model": source,
        "memory": {"arena_bytes": compiled.arena_bytes, "const_bytes": compiled.const_bytes,
                   "io_bytes": compiled.io_bytes,
                   "estimate": estimate},
        "inputs": [_tensor_json(s) for s in compiled.inputs],
        "outputs": [_tensor_json(s) for s in compiled.outputs],
        "macs": compiled.macs,
        "kernels": sorted(compiled.kernel_calls),
        "target": target.as_json(),
        "elf": elf,
        "files": file_hashes(out_dir),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n",
                                           encoding="utf-8")
    return manifest
