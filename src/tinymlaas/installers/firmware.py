"""Build a model into a bare-metal Cortex-M application for an MCUboot primary slot.

The application is the model's C sources, a startup file (vector table, ``.data`` copy,
``.bss`` clear, FPU enable) and a ``main`` that runs the model once on a zero input and
keeps the status and outputs in RAM. It is linked so that its vector table sits at
*slot start + header size*: imgtool later fills the first ``header_size`` bytes of the slot
with the MCUboot image header, and MCUboot jumps to the vector table after verifying it.

Tools: Debian ``gcc-arm-none-eabi libnewlib-arm-none-eabi`` (gcc, objcopy, size).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from pydantic import BaseModel

from tinymlaas.compiler.codegen import io_bytes_expr, io_declarations
from tinymlaas.compiler.cortex_m import ElfSizes, elf_sizes
from tinymlaas.domain import ArtifactKind, Device
from tinymlaas.errors import (
    InvalidInputError,
    ServiceUnavailableError,
    StepFailedError,
    UnsupportedModelError,
)

__all__ = [
    "SUPPORTED_ARCHS",
    "FirmwareBuild",
    "ModelSources",
    "SlotLayout",
    "build_firmware",
    "collect_sources",
    "cpu_flags",
    "default_flash_base",
    "tools_missing",
    "trailer_reserve",
    "tree_sha256",
]

GCC = "arm-none-eabi-gcc"
OBJCOPY = "arm-none-eabi-objcopy"
SIZE = "arm-none-eabi-size"

#: GCC CPU flags per architecture: (without FPU, with the ``fpu`` feature).
SUPPORTED_ARCHS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cortex-m0": (("-mcpu=cortex-m0", "-mfloat-abi=soft"),) * 2,
    "cortex-m0plus": (("-mcpu=cortex-m0plus", "-mfloat-abi=soft"),) * 2,
    "cortex-m1": (("-mcpu=cortex-m1", "-mfloat-abi=soft"),) * 2,
    "cortex-m3": (("-mcpu=cortex-m3", "-mfloat-abi=soft"),) * 2,
    "cortex-m4": (("-mcpu=cortex-m4", "-mfloat-abi=soft"),
                  ("-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")),
    "cortex-m7": (("-mcpu=cortex-m7", "-mfloat-abi=soft"),
                  ("-mcpu=cortex-m7", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16")),
    "cortex-m23": (("-mcpu=cortex-m23", "-mfloat-abi=soft"),) * 2,
    "cortex-m33": (("-mcpu=cortex-m33+nodsp", "-mfloat-abi=soft"),
                   ("-mcpu=cortex-m33", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16")),
    "cortex-m35p": (("-mcpu=cortex-m35p+nodsp", "-mfloat-abi=soft"),
                    ("-mcpu=cortex-m35p", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16")),
    "cortex-m55": (("-mcpu=cortex-m55+nofp+nomve", "-mfloat-abi=soft"),
                   ("-mcpu=cortex-m55", "-mfloat-abi=hard", "-mfpu=auto")),
    "cortex-m85": (("-mcpu=cortex-m85+nofp+nomve", "-mfloat-abi=soft"),
                   ("-mcpu=cortex-m85", "-mfloat-abi=hard", "-mfpu=auto")),
}

#: Where on-chip flash starts, by device name prefix (0 elsewhere).
_FLASH_BASES = (("stm32", 0x0800_0000), ("raspberry-pi-pico", 0x1000_0000),
                ("alif-", 0x8000_0000))
_APP_FILES = ("tm_app_main.c", "tm_app_startup.c", "tm_app_link.ld")
_MAIN = re.compile(r"\bint\s+main\s*\(")


def cpu_flags(device: Device) -> tuple[str, ...]:
    """GCC flags for the device's CPU, hard float when it lists the ``fpu`` feature.

    Raises:
        UnsupportedModelError: The device is not a Cortex-M.
    """
    arch = device.arch.strip().lower()
    if arch not in SUPPORTED_ARCHS:
        raise UnsupportedModelError(
            f"Signed MCUboot images are built for Cortex-M devices only; {device.name!r} is "
            f"{device.arch!r}. Supported: {', '.join(SUPPORTED_ARCHS)}.",
            {"arch": device.arch, "supported": list(SUPPORTED_ARCHS)})
    soft, hard = SUPPORTED_ARCHS[arch]
    return ("-mthumb", *(hard if "fpu" in device.features else soft))


def default_flash_base(device: Device) -> int:
    """The address of the device's on-chip flash (STM32 0x08000000, RP2040 0x10000000...)."""
    for prefix, base in _FLASH_BASES:
        if device.name.startswith(prefix):
            return base
    return 0


def trailer_reserve(align: int) -> int:
    """Bytes kept free at the slot's end: TLVs (hash, key hash, signature, counter) and the
    MCUboot swap trailer (128 sectors x 3 status writes, flags, magic)."""
    max_align = max(8, align)
    return 1024 + 128 * 3 * align + 4 * max_align + ((16 + max_align - 1) // max_align) * max_align


def tools_missing() -> list[str]:
    """The cross tools that are not installed (empty when all are)."""
    return [tool for tool in (GCC, OBJCOPY, SIZE) if shutil.which(tool) is None]


def tree_sha256(directory: Path) -> str:
    """SHA-256 over a directory's files: sorted relative paths and the content hashes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        digest.update(f"{rel}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSources:
    """The C sources of one model: its API name, header and translation units."""

    name: str
    header: Path
    sources: tuple[Path, ...]
    include_dir: Path
    num_inputs: int
    num_outputs: int
    #: The header's ``<NAME>_IO_IN_ARENA``: inputs and outputs are slots in the arena.
    io_in_arena: bool = False


def collect_sources(input_path: Path, kind: ArtifactKind) -> ModelSources:
    """Find the model's sources in a ``c-source`` directory or a ``c-bundle``'s ``src/``.

    The model's name and I/O count come from its header (``<NAME>_NUM_INPUTS`` and the
    ``<name>_input0_t`` typedef that the compiler writes); ``model.json`` picks the header
    when there is one.

    Raises:
        InvalidInputError: No generated model header, links, or another ``main``.
    """
    root = Path(input_path)
    src = root / "src" if kind == ArtifactKind.c_bundle else root
    if not src.is_dir():
        raise InvalidInputError(f"The {kind.value} artifact has no {src.name}/ directory of "
                                "C sources; give the output of compile-c or package-c.")
    files = sorted(p for p in src.iterdir() if p.suffix in (".c", ".h"))
    for path in files:
        if path.is_symlink() or not path.is_file():
            raise InvalidInputError(f"{path.name} in the C sources is not a regular file.")
    headers = [p for p in files if p.suffix == ".h"]
    preferred = _meta_name(root) or _meta_name(src)
    candidates = sorted(headers, key=lambda p: (p.stem != preferred, p.name))
    for header in candidates:
        found = _parse_header(header)
        if found:
            name, inputs, outputs, in_arena = found
            break
    else:
        raise InvalidInputError("No generated model header (with <NAME>_NUM_INPUTS) among "
                                f"the {kind.value} sources; give the output of compile-c.")
    sources = tuple(p for p in files if p.suffix == ".c"
                    and not _MAIN.search(p.read_text("utf-8", errors="replace")))
    return ModelSources(name=name, header=header, sources=sources, include_dir=src,
                        num_inputs=inputs, num_outputs=outputs, io_in_arena=in_arena)


def _meta_name(directory: Path) -> str | None:
    """The model's C name from ``model.json`` (compile-c) or ``manifest.json`` (package-c)."""
    for meta in (directory / "model.json", directory / "manifest.json"):
        if not meta.is_file():
            continue
        try:
            name = json.loads(meta.read_text("utf-8")).get("name")
        except (ValueError, AttributeError):
            continue
        if isinstance(name, str):
            return name
    return None


def _parse_header(header: Path) -> tuple[str, int, int, bool] | None:
    text = header.read_text("utf-8", errors="replace")
    typedef = re.search(r"typedef\s+[\w ]+?\s+([A-Za-z_]\w*)_input0_t\s*;", text)
    if not typedef:
        return None
    name = typedef.group(1)
    counts = [re.search(rf"#define\s+{name.upper()}_NUM_{what}\s+(\d+)", text)
              for what in ("INPUTS", "OUTPUTS")]
    if not all(counts):
        return None
    in_arena = re.search(rf"#define\s+{name.upper()}_IO_IN_ARENA\s+1\b", text) is not None
    return (name, int(counts[0].group(1)), int(counts[1].group(1)),  # type: ignore[union-attr]
            in_arena)


class SlotLayout(BaseModel):
    """Where the application lives: the primary slot and the RAM."""

    slot_address: int
    header_size: int
    slot_size: int
    reserve: int
    ram_address: int
    ram_size: int

    @property
    def vector_address(self) -> int:
        return self.slot_address + self.header_size

    @property
    def code_limit(self) -> int:
        return self.slot_size - self.header_size - self.reserve


class FirmwareBuild(BaseModel):
    """The linked application: ELF, raw binary and section sizes."""

    elf: Path
    binary: Path
    sizes: ElfSizes


def _template(name: str) -> Template:
    text = (resources.files("tinymlaas.installers").joinpath("files/firmware")
            .joinpath(name).read_text("utf-8"))
    return Template(text)


def _main_source(model: ModelSources) -> str:
    n = model.name
    buffers, call = io_declarations(n, model.num_inputs, model.num_outputs,
                                    in_arena=model.io_in_arena,
                                    names=("tm_app_input", "tm_app_output"), storage="")
    if not model.io_in_arena:  # the inputs need no external linkage
        buffers = [f"static {line}" if "tm_app_input" in line.split("[")[0] else line
                   for line in buffers]
    prints = [f'  tm_print_hex("OUT{i} ", tm_app_output{i}, '
              f'{io_bytes_expr(n, "output", i)});' for i in range(model.num_outputs)]
    return _template("main.c.tmpl").substitute(
        name=n, header=model.header.name, buffers="\n".join(buffers),
        call=call, prints="\n".join(prints))


def build_firmware(
    model: ModelSources,
    layout: SlotLayout,
    flags: tuple[str, ...],
    work_dir: Path,
    *,
    optimize: str = "-Os",
    semihosting: bool = False,
) -> FirmwareBuild:
    """Compile and link the application for the primary slot, then ``objcopy -O binary``.

    Args:
        model: The model's sources.
        layout: Slot address, header and slot size, RAM.
        flags: CPU flags (:func:`cpu_flags`).
        work_dir: Where the generated files, ``app.elf`` and ``app.bin`` go.
        optimize: GCC optimisation flag.
        semihosting: Print the outputs and exit through semihosting (debugger/emulator).

    Raises:
        ServiceUnavailableError: The cross toolchain is missing.
        InvalidInputError: The application does not fit the slot or the RAM.
        StepFailedError: Any other build failure.
    """
    missing = tools_missing()
    if missing:
        raise ServiceUnavailableError(
            f"Missing {', '.join(missing)}; install the Debian packages gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi.", {"missing": missing})
    if layout.code_limit <= 0:
        raise InvalidInputError(f"A slot of {layout.slot_size} bytes leaves no room for code "
                                "after the header and trailer; give a bigger slot_size.")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    main_c, startup_c, link_ld = (work / name for name in _APP_FILES)
    main_c.write_text(_main_source(model), encoding="utf-8")
    startup_c.write_text(_template("startup.c.tmpl").substitute(), encoding="utf-8")
    link_ld.write_text(_template("link.ld.tmpl").substitute(
        slot_start=f"0x{layout.slot_address:08X}", header_size=f"0x{layout.header_size:X}",
        flash_origin=f"0x{layout.vector_address:08X}", flash_length=f"0x{layout.code_limit:X}",
        ram_origin=f"0x{layout.ram_address:08X}", ram_length=f"0x{layout.ram_size:X}"),
        encoding="utf-8")
    elf, binary = work / "app.elf", work / "app.bin"
    command = [
        GCC, *flags, optimize, "-std=c99", "-ffunction-sections", "-fdata-sections",
        "-Wall", "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
        "-Wl,--gc-sections", f"-T{link_ld}", "-I", str(model.include_dir),
        *(["-DTM_APP_SEMIHOSTING"] if semihosting else []),
        str(startup_c), str(main_c), *(str(p) for p in model.sources), "-lm", "-o", str(elf),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr[-4000:]
        if "overflowed" in tail or "will not fit" in tail:
            raise InvalidInputError(
                "The application does not fit the device: code and constants may use "
                f"{layout.code_limit} bytes of the slot and data {layout.ram_size} bytes of "
                f"RAM; give a bigger slot_size or a smaller model.\n{tail[-1500:]}",
                {"code_limit": layout.code_limit, "ram_size": layout.ram_size})
        raise StepFailedError(f"The firmware build failed:\n{tail}", {"stderr": tail})
    proc = subprocess.run([OBJCOPY, "-O", "binary", str(elf), str(binary)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StepFailedError(f"objcopy failed: {proc.stderr[-2000:]}")
    return FirmwareBuild(elf=elf, binary=binary, sizes=elf_sizes(elf))
