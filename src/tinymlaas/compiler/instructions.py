"""Instructions per inference on the emulated Cortex-M4: a count that repeats run to run.

The firmware of :func:`~tinymlaas.compiler.cortex_m.build_cortex_m` reads two of the MPS2
AN386 board's timers just before and just after each inference. QEMU runs it with
``-icount shift=6,sleep=off``: the virtual clock then advances exactly 64 ns per retired
guest instruction and never with host time, so the timers (25 MHz, 40 ns a tick) advance
1.6 ticks per instruction whatever the host's speed or load. After n instructions the
timer has advanced floor(1.6 n) ticks, a value no other n gives, so each read names the
exact instruction the program is at, and the difference of the two reads is the number of
instructions the inference retired: the same firmware gives the same count on every run
and every machine. The fine timer wraps after 2^32 ticks (about 2.7 G instructions); the
second timer, prescaled by 256, tells how many times it did.

An instruction count is not a cycle count: a Cortex-M4 takes one cycle for most
instructions, two or more for loads after loads, taken branches, divisions and multiply-
accumulates into 64 bits, and its flash adds wait states above about 30 MHz. Published
cycle figures therefore sit somewhat above an instruction count of the same code.

Tools: Debian ``gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm``.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from tinymlaas.compiler.api import CompileResult
from tinymlaas.compiler.cortex_m import CORTEX_M4_FLAGS, QEMU, CortexMBuild, build_cortex_m
from tinymlaas.errors import InvalidInputError, StepFailedError

__all__ = [
    "ICOUNT_SHIFT",
    "InstructionCount",
    "count_instructions",
    "measure_instructions",
    "measure_layer_instructions",
]

#: ``-icount shift``: each instruction advances the virtual clock by 2**shift ns.
ICOUNT_SHIFT = 6
#: Period of the AN386 timers (25 MHz), in ns.
TIMER_PERIOD_NS = 40
_WRAP = 1 << 32
_COARSE_PRESCALE = 256


class InstructionCount(BaseModel):
    """Retired instructions of each inference of a firmware image under QEMU."""

    board: str = Field(default="mps2-an386", description="the QEMU machine (Cortex-M4)")
    method: str = Field(default=f"qemu -icount shift={ICOUNT_SHIFT} + board timers",
                        description="how the count was taken")
    per_inference: list[int] = Field(description="instructions of each sample's inference, "
                                                 "in the order of the samples")
    bracket: int = Field(description="instructions between two timer reads with nothing "
                                     "between them, already subtracted")
    per_layer: list[int] = Field(default=[], description="instructions of each kernel call "
                                 "of the first sample (a model compiled with layer_marks "
                                 "and built with -DTM_LAYER_HOOK; otherwise empty)")
    layer_mark: int = Field(default=0, description="instructions of one layer mark, "
                                                   "already subtracted everywhere")

    @property
    def instructions(self) -> int:
        """The largest count over the samples (they differ only where the code branches on
        the data)."""
        return max(self.per_inference)


def _ticks(fine: int, coarse: int) -> int:
    """Ticks since the timers started, from the two down-counters' values: the fine
    timer's, with its wraps (every 2^32 ticks) recovered from the coarse one."""
    fine_elapsed, coarse_elapsed = _WRAP - 1 - fine, _WRAP - 1 - coarse
    wraps = round((coarse_elapsed * _COARSE_PRESCALE - fine_elapsed) / _WRAP)
    return fine_elapsed + max(wraps, 0) * _WRAP


def _instructions(ticks: int) -> int:
    """Instructions retired since the timers started, from the ticks: the tick count is
    floor(n * 64 / 40) after n instructions, which rises by at least one per instruction,
    so the inverse is exact."""
    return -(-ticks * TIMER_PERIOD_NS // (1 << ICOUNT_SHIFT))


def count_instructions(build: CortexMBuild, *, timeout: float = 600.0) -> InstructionCount:
    """Run a built firmware under QEMU with a deterministic clock and count the instructions
    each inference retires.

    Args:
        build: A firmware image from :func:`~tinymlaas.compiler.cortex_m.build_cortex_m`
            (any kernel set or compiler flags).
        timeout: Seconds QEMU may run.

    Returns:
        One count per sample baked into the firmware.

    Raises:
        StepFailedError: QEMU failed, timed out, or the firmware printed no counts.
    """
    command = [QEMU, "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
               "-icount", f"shift={ICOUNT_SHIFT},sleep=off",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(build.elf)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise StepFailedError(f"QEMU did not finish within {timeout:.0f} s.") from exc
    text = proc.stdout + proc.stderr
    spans: dict[str, list[int]] = {"EMPTY": [], "TICKS": [], "MARK": []}
    starts: list[int] = []
    marks: list[list[int]] = []
    hex8 = "([0-9a-f]{8})"
    for line in text.splitlines():
        match = re.match(rf"^(EMPTY|TICKS|MARK) {hex8} {hex8} {hex8} {hex8}\s*$", line.strip())
        if match:
            start, coarse0, end, coarse1 = (int(g, 16) for g in match.groups()[1:])
            first = _instructions(_ticks(start, coarse0))
            spans[match.group(1)].append(_instructions(_ticks(end, coarse1)) - first)
            if match.group(1) == "TICKS":
                starts.append(first)
                marks.append([])
            continue
        match = re.match(rf"^LAYER {hex8} {hex8} {hex8}\s*$", line.strip())
        if match and marks:
            _, fine, coarse = (int(g, 16) for g in match.groups())
            marks[-1].append(_instructions(_ticks(fine, coarse)))
    if (proc.returncode != 0 or "DONE" not in text or not spans["EMPTY"]
            or not spans["TICKS"] or not spans["MARK"]):
        raise StepFailedError(
            f"The firmware printed no instruction counts under QEMU (exit {proc.returncode}):"
            f" {text[-2000:]}")
    bracket, mark = spans["EMPTY"][0], spans["MARK"][0]
    per_layer = []
    if marks and marks[0]:
        edges = [starts[0], *marks[0]]
        per_layer = [b - a - mark for a, b in itertools.pairwise(edges)]
    return InstructionCount(
        per_inference=[n - bracket - mark * len(m) for n, m in zip(spans["TICKS"], marks,
                                                                     strict=True)],
        bracket=bracket, per_layer=per_layer, layer_mark=mark)


def measure_instructions(result: CompileResult, inputs: list[np.ndarray],
                         work_dir: str | Path, *, flags: tuple[str, ...] = CORTEX_M4_FLAGS,
                         optimize: str = "-Os", timeout: float = 600.0) -> InstructionCount:
    """Build a compiled model's firmware with :func:`~tinymlaas.compiler.cortex_m.
    build_cortex_m` (``flags`` and ``optimize`` are its options) and count its instructions
    per inference on ``inputs`` (one array per model input: a batch of samples)."""
    build = build_cortex_m(result, inputs, work_dir, flags=flags, optimize=optimize)
    return count_instructions(build, timeout=timeout)


def measure_layer_instructions(result: CompileResult, inputs: list[np.ndarray],
                               work_dir: str | Path, *,
                               flags: tuple[str, ...] = CORTEX_M4_FLAGS,
                               optimize: str = "-Os", timeout: float = 600.0
                               ) -> InstructionCount:
    """Instructions per kernel call (``per_layer``) and per inference of a model compiled
    with ``layer_marks=True``: its firmware is built with ``-DTM_LAYER_HOOK``, so each
    call's end reads the timers too; the marks' own cost is subtracted.

    Raises:
        InvalidInputError: The model was compiled without ``layer_marks``.
    """
    if not result.layer_marks:
        raise InvalidInputError("per-layer counts need a model compiled with "
                                "layer_marks=True")
    build = build_cortex_m(result, inputs, work_dir, flags=(*flags, "-DTM_LAYER_HOOK"),
                           optimize=optimize)
    return count_instructions(build, timeout=timeout)
