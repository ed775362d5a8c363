"""Transformers that misbehave on purpose, installed through the real entry-point group.

They prove that a step that crashes, hangs or eats memory fails its run with the cause
while everything else carries on.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

from pydantic import Field

from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer


class CrashParams(Params):
    signal_number: int = Field(default=int(signal.SIGSEGV))


class Crash(Transformer):
    name = "test-crash"
    summary = "Kills its own worker process with a signal."
    Params = CrashParams

    def run(self, ctx: StepContext) -> StepOutput:
        os.kill(os.getpid(), ctx.params.signal_number)
        time.sleep(5)
        raise AssertionError("unreachable")


class HangParams(Params):
    seconds: float = 600.0


class Hang(Transformer):
    name = "test-hang"
    summary = "Sleeps far longer than any timeout."
    Params = HangParams

    def run(self, ctx: StepContext) -> StepOutput:
        time.sleep(ctx.params.seconds)
        raise AssertionError("unreachable")


class HogParams(Params):
    megabytes: int = 3000


class Hog(Transformer):
    name = "test-hog"
    summary = "Allocates (and touches) more memory than the step limit."
    Params = HogParams

    def run(self, ctx: StepContext) -> StepOutput:
        blocks = []
        for _ in range(ctx.params.megabytes // 100):
            blocks.append(bytearray(b"x" * (100 * 2**20)))
            time.sleep(0.05)
        raise AssertionError("the memory limit did not stop this step")


class CopyParams(Params):
    note_file: str | None = None


class Copy(Transformer):
    name = "test-copy"
    summary = "Copies the ONNX input unchanged (a third-party transformer that works)."
    Params = CopyParams
    file_params = ("note_file",)

    def run(self, ctx: StepContext) -> StepOutput:
        out = ctx.out_dir / "model.onnx"
        shutil.copyfile(ctx.input_path, out)
        ctx.progress(1.0, "copied")
        return StepOutput(out, self.produces, {"copied_bytes": out.stat().st_size})
