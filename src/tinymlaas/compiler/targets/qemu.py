"""Bare-metal C programs for a Cortex-M target, built with arm-none-eabi-gcc and run under
``qemu-system-arm`` on the MPS2 board of the target (AN385 Cortex-M3, AN386 Cortex-M4,
AN500 Cortex-M7). The program's ``main`` prints through ``tm_semihost_write0`` (declared
by ``startup.c``) and its return value becomes QEMU's exit status.

Tools: Debian ``gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from tinymlaas.compiler.targets import Target, get_target, startup_source
from tinymlaas.errors import InvalidInputError, ServiceUnavailableError, StepFailedError

__all__ = ["GCC", "QEMU", "build_bare_metal", "run_bare_metal", "tools_missing"]

GCC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"
_BOARDS = ("mps2-an385", "mps2-an386", "mps2-an500")


def tools_missing() -> list[str]:
    """Names of the cross tools that are not installed (empty when all are)."""
    return [tool for tool in (GCC, QEMU) if shutil.which(tool) is None]


def _board(target: Target) -> str:
    if target.qemu_machine not in _BOARDS:
        raise InvalidInputError(
            f"No QEMU MPS2 board runs {target.name}; use one of cortex-m3, cortex-m4, "
            "cortex-m7.", {"target": target.name})
    return str(target.qemu_machine)


def build_bare_metal(sources: Sequence[str | Path], work_dir: str | Path,
                     target: str | Target = "cortex-m4", *, optimize: str = "-Os",
                     extra_flags: Sequence[str] = ()) -> Path:
    """Compile and link C sources with the MPS2 startup into ``program.elf``.

    Args:
        sources: C files; one defines ``int main(void)``.
        work_dir: Where the startup, linker script and ELF go.
        target: A Cortex-M target that QEMU emulates.
        optimize: Optimisation flag.
        extra_flags: More compiler flags (``-I``, ``-D`` ...).

    Returns:
        The ELF path.

    Raises:
        ServiceUnavailableError: The cross toolchain is not installed.
        StepFailedError: The build failed (the compiler's messages are in it).
    """
    chosen = get_target(target) if isinstance(target, str) else target
    _board(chosen)
    missing = tools_missing()
    if missing:
        raise ServiceUnavailableError(
            f"Missing {', '.join(missing)}; install the Debian packages gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi qemu-system-arm.", {"missing": missing})
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "startup.c").write_text(startup_source(), encoding="utf-8")
    script = resources.files("tinymlaas.compiler.targets").joinpath("mps2.ld")
    (work / "link.ld").write_text(script.read_text("utf-8"), encoding="utf-8")
    elf = work / "program.elf"
    command = [GCC, *chosen.cflags, optimize, "-std=c99", "-ffunction-sections",
               "-fdata-sections", "-Wall", "-Werror", "-nostartfiles", "--specs=nano.specs",
               "--specs=nosys.specs", "-Wl,--gc-sections", f"-T{work / 'link.ld'}",
               *extra_flags, str(work / "startup.c"), *map(str, sources), "-lm",
               "-o", str(elf)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StepFailedError(f"The {chosen.name} build failed:\n{proc.stderr[-4000:]}",
                              {"stderr": proc.stderr[-4000:]})
    return elf


def run_bare_metal(elf: str | Path, target: str | Target = "cortex-m4", *,
                   timeout: float = 120.0) -> str:
    """Run an ELF from :func:`build_bare_metal` in QEMU and return what it printed.

    Raises:
        StepFailedError: The program returned non-zero, faulted or did not finish in time.
    """
    chosen = get_target(target) if isinstance(target, str) else target
    command = [QEMU, "-M", _board(chosen), "-nographic", "-monitor", "none", "-serial",
               "none", "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise StepFailedError(f"QEMU did not finish within {timeout:.0f} s.") from exc
    text = proc.stdout + proc.stderr  # semihosting output goes to either, by version
    if proc.returncode != 0:
        raise StepFailedError(f"The program failed under QEMU (exit {proc.returncode}): "
                              f"{text[-2000:]}")
    return text
