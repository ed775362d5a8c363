"""Cross-build generated models for Cortex-M and run them under QEMU.

The firmware is the generated model, a small harness with sample inputs baked in, and a
minimal startup for the Arm MPS2+ AN386 board (Cortex-M4 with FPU), which
``qemu-system-arm -M mps2-an386`` emulates. The harness runs the model on every sample and
prints the output bytes through semihosting; the section sizes of the ELF give the real
flash (code + constants) and RAM (data + bss, which holds the arena) figures.

Tools: Debian ``gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from math import prod
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from tinymlaas.compiler.api import CompileResult
from tinymlaas.compiler.codegen import _array_literal, io_bytes_expr, io_declarations
from tinymlaas.errors import InvalidInputError, ServiceUnavailableError, StepFailedError

__all__ = [
    "CORTEX_M4_FLAGS",
    "CortexMBuild",
    "ElfSizes",
    "build_cortex_m",
    "elf_sizes",
    "run_cortex_m",
    "toolchain_missing",
]

#: Compiler flags for the Cortex-M4 with single-precision FPU.
CORTEX_M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
GCC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"
QEMU = "qemu-system-arm"

_LINKER_SCRIPT = """\
/* Memory map of the Arm MPS2+ AN386 (Cortex-M4) as QEMU emulates it. */
MEMORY
{
  FLASH (rx)  : ORIGIN = 0x00000000, LENGTH = 4M
  RAM   (rwx) : ORIGIN = 0x20000000, LENGTH = 4M
}
ENTRY(Reset_Handler)
SECTIONS
{
  .vectors : { KEEP(*(.vectors)) } > FLASH
  .text : { *(.text*) *(.glue_7) *(.glue_7t) KEEP(*(.init)) KEEP(*(.fini)) } > FLASH
  .rodata : { . = ALIGN(16); *(.rodata*) . = ALIGN(4); } > FLASH
  .ARM.exidx : { *(.ARM.exidx* .gnu.linkonce.armexidx.*) } > FLASH
  _sidata = LOADADDR(.data);
  .data : { . = ALIGN(4); _sdata = .; *(.data*) . = ALIGN(4); _edata = .; } > RAM AT > FLASH
  .bss (NOLOAD) : { . = ALIGN(16); _sbss = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; } > RAM
  _estack = ORIGIN(RAM) + LENGTH(RAM);
  end = _ebss;
}
"""

_FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".ARM.exidx", ".data")
_RAM_SECTIONS = (".data", ".bss")


class ElfSizes(BaseModel):
    """Section sizes of a linked firmware image."""

    sections: dict[str, int]
    flash_bytes: int
    ram_bytes: int
    text_bytes: int
    rodata_bytes: int


class CortexMBuild(BaseModel):
    """A firmware image and, after running it, the outputs it printed."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    elf: Path
    sizes: ElfSizes
    sample_bytes: int
    planner_arena_bytes: int
    planner_const_bytes: int
    outputs: list[list[np.ndarray]] = []

    @property
    def code_overhead_bytes(self) -> int:
        """Flash beyond the model's constants and the baked-in samples: code, startup, libm."""
        return self.sizes.flash_bytes - self.planner_const_bytes - self.sample_bytes


def toolchain_missing() -> list[str]:
    """Names of the cross tools that are not installed (empty when all are)."""
    return [tool for tool in (GCC, SIZE, QEMU) if shutil.which(tool) is None]


def _require_tools() -> None:
    missing = toolchain_missing()
    if missing:
        raise ServiceUnavailableError(
            f"Missing {', '.join(missing)}; install the Debian packages gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi qemu-system-arm.",
            {"missing": missing},
        )


def _harness(result: CompileResult, samples: list[list[np.ndarray]]) -> tuple[str, int]:
    lines = [f'#include "{result.name}.h"', "#include <stdint.h>", "#include <string.h>", "",
             "void tm_semihost_write0(const char* text);", ""]
    sample_bytes = 0
    for i, spec in enumerate(result.inputs):
        data = np.stack([np.asarray(s[i], dtype=spec.dtype).reshape(-1) for s in samples])
        sample_bytes += data.nbytes
        lines.append(f"static const {result.name}_input{i}_t sample_in{i}"
                     f"[{len(samples)}][{prod(spec.shape)}] = {_array_literal(data)};")
    name = result.name
    if result.io == "arena":  # the model's own slots: copy each sample into the input
        declarations, run = io_declarations(name, len(result.inputs), len(result.outputs),
                                            in_arena=True)
        call = [f"    memcpy(in{i}, sample_in{i}[s], sizeof(sample_in{i}[s]));"
                for i in range(len(result.inputs))]
    else:  # the samples stay in flash, the outputs in static arrays
        declarations = [f"static {name}_output{i}_t out{i}[{max(1, prod(spec.shape))}];"
                        for i, spec in enumerate(result.outputs)]
        args = [f"sample_in{i}[s]" for i in range(len(result.inputs))]
        args += [f"out{i}" for i in range(len(result.outputs))]
        run, call = f"{name}_run({', '.join(args)})", []
    lines += declarations
    # The inference alone sits between two reads of the board's timers, which QEMU's
    # -icount clock makes count retired instructions (tinymlaas.compiler.instructions).
    call += ["    uint32_t c0 = TM_COARSE, f0 = TM_FINE;",
             f"    int status = {run};",
             "    uint32_t f1 = TM_FINE, c1 = TM_COARSE;",
             "    if (status != 0) return 1;",
             '    tm_semihost_write0("TICKS ");',
             "    print_u32(f0);",
             "    print_u32(c0);",
             "    print_u32(f1);",
             "    print_u32(c1);",
             '    tm_semihost_write0("\\n");']
    lines += [
        "",
        *_TIMER_LINES,
        *_layer_hook(max(result.kernels, 2)),
        "static void print_hex(const void* data, unsigned n) {",
        "  static const char digits[] = \"0123456789abcdef\";",
        "  char buf[129];",
        "  const uint8_t* p = (const uint8_t*)data;",
        "  unsigned k = 0;",
        "  for (unsigned i = 0; i < n; ++i) {",
        "    buf[k++] = digits[p[i] >> 4];",
        "    buf[k++] = digits[p[i] & 15];",
        "    if (k == 128) { buf[k] = 0; tm_semihost_write0(buf); k = 0; }",
        "  }",
        "  buf[k] = 0;",
        "  tm_semihost_write0(buf);",
        "}",
        "",
        "int main(void) {",
        *_TIMER_START_LINES,
        f"  for (unsigned s = 0; s < {len(samples)}u; ++s) {{",
        *call,
    ]
    lines += ["    for (int k = 0; k < tm_layers_seen; ++k) {",
              '      tm_semihost_write0("LAYER ");',
              "      print_u32((uint32_t)k);",
              "      print_u32(tm_layer_fine[k]);",
              "      print_u32(tm_layer_coarse[k]);",
              '      tm_semihost_write0("\\n");',
              "    }"]
    for i in range(len(result.outputs)):
        lines += [f'    tm_semihost_write0("OUT{i} ");',
                  f"    print_hex(out{i}, {io_bytes_expr(name, 'output', i)});",
                  '    tm_semihost_write0("\\n");']
    lines += ["  }", '  tm_semihost_write0("DONE\\n");', "  return 0;", "}", ""]
    return "\n".join(lines), sample_bytes


#: The MPS2 AN386 timers (25 MHz, counting down): the CMSDK APB timer 0 counts every tick,
#: the dual timer's first counter every 256th, so a long inference that wraps the first
#: (2^32 ticks) is still told apart from a short one.
_TIMER_LINES = [
    "#define TM_FINE (*(volatile uint32_t*)0x40000004u)",
    "#define TM_COARSE (*(volatile uint32_t*)0x40002004u)",
    "",
    "static void print_u32(uint32_t value) {",
    "  char buf[10];",
    "  for (int i = 7; i >= 0; --i) {",
    "    buf[i] = \"0123456789abcdef\"[value & 15u];",
    "    value >>= 4;",
    "  }",
    "  buf[8] = ' ';",
    "  buf[9] = 0;",
    "  tm_semihost_write0(buf);",
    "}",
    "",
]


def _layer_hook(calls: int) -> list[str]:
    """``tm_layer_end``, which a model compiled with ``layer_marks`` and built with
    ``-DTM_LAYER_HOOK`` calls after each kernel call: it keeps the timers' values."""
    return [
        f"static uint32_t tm_layer_fine[{calls}], tm_layer_coarse[{calls}];",
        "static int tm_layers_seen;",
        "void tm_layer_end(int step);",
        "__attribute__((noinline)) void tm_layer_end(int step) {",
        "  uint32_t f = TM_FINE, c = TM_COARSE;",
        f"  if (step >= 0 && step < {calls}) {{",
        "    tm_layer_fine[step] = f;",
        "    tm_layer_coarse[step] = c;",
        "    if (step >= tm_layers_seen) tm_layers_seen = step + 1;",
        "  }",
        "}",
        "",
    ]


_TIMER_START_LINES = [
    "  *(volatile uint32_t*)0x40000008u = 0xFFFFFFFFu; /* timer 0: reload */",
    "  TM_FINE = 0xFFFFFFFFu;",
    "  *(volatile uint32_t*)0x40000000u = 1u; /* enable */",
    "  *(volatile uint32_t*)0x40002000u = 0xFFFFFFFFu; /* dual timer 1: load */",
    "  *(volatile uint32_t*)0x40002008u = 0x8Au; /* enable, 32-bit, prescale 256 */",
    "  {",
    "    uint32_t c0 = TM_COARSE, f0 = TM_FINE;",
    "    uint32_t f1 = TM_FINE, c1 = TM_COARSE;",
    '    tm_semihost_write0("EMPTY ");',
    "    print_u32(f0);",
    "    print_u32(c0);",
    "    print_u32(f1);",
    "    print_u32(c1);",
    '    tm_semihost_write0("\\n");',
    "    tm_layer_end(0);",  # one layer mark's own cost: two marks back to back
    "    tm_layer_end(1);",
    '    tm_semihost_write0("MARK ");',
    "    print_u32(tm_layer_fine[0]);",
    "    print_u32(tm_layer_coarse[0]);",
    "    print_u32(tm_layer_fine[1]);",
    "    print_u32(tm_layer_coarse[1]);",
    '    tm_semihost_write0("\\n");',
    "    tm_layers_seen = 0;",
    "  }",
]


def _samples(result: CompileResult, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    if len(inputs) != len(result.inputs):
        raise InvalidInputError(f"The model takes {len(result.inputs)} input(s).")
    count = None
    per_input = []
    for array, spec in zip(inputs, result.inputs, strict=True):
        array = np.asarray(array, dtype=spec.dtype)
        if array.shape == tuple(spec.shape):
            array = array[None]
        if array.shape[1:] != tuple(spec.shape) and array.shape[1:] != tuple(spec.shape[1:]):
            raise InvalidInputError(f"Samples for {spec.name!r} must be a batch of {spec.shape}.")
        count = array.shape[0] if count is None else count
        per_input.append(array)
    return [[a[s] for a in per_input] for s in range(count or 0)]


def elf_sizes(elf: str | Path) -> ElfSizes:
    """Section sizes from ``arm-none-eabi-size -A``: flash and RAM use of the image."""
    proc = subprocess.run([SIZE, "-A", str(elf)], capture_output=True, text=True, check=True)
    sections: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"^(\.\S+)\s+(\d+)\s+(\d+)", line)
        if match:
            sections[match.group(1)] = int(match.group(2))
    return ElfSizes(
        sections=sections,
        flash_bytes=sum(sections.get(s, 0) for s in _FLASH_SECTIONS),
        ram_bytes=sum(sections.get(s, 0) for s in _RAM_SECTIONS),
        text_bytes=sections.get(".text", 0) + sections.get(".vectors", 0),
        rodata_bytes=sections.get(".rodata", 0),
    )


def build_cortex_m(
    result: CompileResult,
    inputs: list[np.ndarray],
    work_dir: str | Path,
    *,
    flags: tuple[str, ...] = CORTEX_M4_FLAGS,
    optimize: str = "-Os",
) -> CortexMBuild:
    """Cross-compile a generated model with a harness for the QEMU MPS2 AN386 board.

    Args:
        result: The compiled model.
        inputs: One array per model input: a batch of samples (or a single sample).
        work_dir: Where the harness, objects and ``firmware.elf`` go.
        flags: CPU flags (default Cortex-M4, hard float).
        optimize: Optimisation flag.

    Returns:
        The ELF path and its section sizes next to the planner's figures.

    Raises:
        ServiceUnavailableError: The cross toolchain is not installed.
        StepFailedError: The build failed.
    """
    _require_tools()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    samples = _samples(result, inputs)
    harness, sample_bytes = _harness(result, samples)
    (work / "main.c").write_text(harness, encoding="utf-8")
    (work / "link.ld").write_text(_LINKER_SCRIPT, encoding="utf-8")
    startup = resources.files("tinymlaas.compiler.targets").joinpath("startup.c").read_text("utf-8")
    (work / "startup.c").write_text(startup, encoding="utf-8")
    elf = work / "firmware.elf"
    command = [
        GCC, *flags, optimize, "-std=c99", "-ffunction-sections", "-fdata-sections",
        "-Wall", "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
        "-Wl,--gc-sections", f"-T{work / 'link.ld'}", "-I", str(result.directory),
        str(work / "startup.c"), str(work / "main.c"), str(result.source), "-lm",
        "-o", str(elf),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StepFailedError(f"Cortex-M build failed:\n{proc.stderr[-4000:]}",
                              {"stderr": proc.stderr[-4000:]})
    return CortexMBuild(elf=elf, sizes=elf_sizes(elf), sample_bytes=sample_bytes,
                        planner_arena_bytes=result.arena_bytes,
                        planner_const_bytes=result.const_bytes)


def run_cortex_m(
    result: CompileResult,
    inputs: list[np.ndarray],
    work_dir: str | Path,
    *,
    timeout: float = 120.0,
) -> CortexMBuild:
    """Build the firmware, run it in ``qemu-system-arm -M mps2-an386`` and read the outputs.

    Returns:
        The build, with ``outputs[sample][output]`` as numpy arrays of the model's dtypes.
    """
    build = build_cortex_m(result, inputs, work_dir)
    command = [QEMU, "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(build.elf)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise StepFailedError(f"QEMU did not finish within {timeout:.0f} s.") from exc
    # Semihosting output lands on QEMU's stdout or stderr depending on the version.
    text = proc.stdout + proc.stderr
    if proc.returncode != 0 or "DONE" not in text:
        raise StepFailedError(
            f"The firmware failed under QEMU (exit {proc.returncode}): {text[-2000:]}"
        )
    rows: dict[int, list[str]] = {}
    for line in text.splitlines():
        match = re.match(r"^OUT(\d+) ([0-9a-f]*)$", line.strip())
        if match:
            rows.setdefault(int(match.group(1)), []).append(match.group(2))
    count = len(rows.get(0, []))
    outputs = []
    for s in range(count):
        sample = []
        for i, spec in enumerate(result.outputs):
            raw = bytes.fromhex(rows[i][s])
            sample.append(np.frombuffer(raw, dtype=spec.dtype)[: prod(spec.shape)]
                          .reshape(spec.shape).copy())
        outputs.append(sample)
    build.outputs = outputs
    return build
