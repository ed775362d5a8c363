"""``bench/compiler.py``: a model's row carries its Cortex-M4 instruction counts (portable
and DSP kernel sets) next to the host figures, and a keyword-spotting model's row the
published STM32L4R5 figures."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from helpers import linear_onnx
from helpers import need_service as require_tool
from tinymlaas.compiler.cortex_m import toolchain_missing

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_compiler", ROOT / "bench" / "compiler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compiler"] = module
    spec.loader.exec_module(module)
    return module


def test_rows_carry_instruction_counts_and_published_figures(tmp_path: Path) -> None:
    missing = toolchain_missing()
    require_tool(not missing, " and ".join(missing) or "the Arm toolchain")
    bench = _bench()
    path = linear_onnx(tmp_path / "kws_linear.onnx", features=64, classes=12)
    kws = bench.measure("kws_linear", path, tmp_path, None, None)
    other = bench.measure("linear", path, tmp_path / "other", None, None)
    json.dumps([kws, other])  # the JSON the bench writes

    # The same firmware, counted twice, gives the same figure: the rows agree.
    assert kws["m4_instructions"] == other["m4_instructions"]
    assert len(set(kws["m4_instructions_per_inference"])) == 1  # float: no data branches
    assert kws["macs"] == 64 * 12
    assert kws["macs"] <= kws["m4_instructions"] <= 16 * kws["macs"]
    assert kws["m4_instructions_per_mac"] == kws["m4_instructions"] / kws["macs"]
    # Float kernels are the same in both sets: same code, same count, same outputs.
    assert kws["m4_instructions_by_kernel_set"] == {"portable": kws["m4_instructions"],
                                                    "cortex-m-dsp": kws["m4_instructions"]}
    assert kws["m4_kernels_equal_portable"] is True and kws["m4_dsp_vs_portable"] == 1.0

    assert [f["system"] for f in kws["published_stm32l4r5"]] == [
        "X-CUBE-AI", "TFLM reference kernels"]
    assert [(f["ms"], f["cycles"]) for f in kws["published_stm32l4r5"]] == [
        (43.4, 5.2e6), (181.9, 21.8e6)]
    assert kws["published_stm32l4r5"][0]["m4_instructions_vs_cycles"] == (
        kws["m4_instructions"] / 5.2e6)
    assert "published_stm32l4r5" not in other

    lines = bench.table([kws, other]).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    for column in ("C / TFLM", "M4 M instr", "instr/MAC", "M4 DSP M instr", "DSP / portable",
                   "STM32L4R5 M cycles (published)", "arena+IO KiB", "agreement"):
        assert column in head, column
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[head.index("M4 M instr")] == f"{kws['m4_instructions'] / 1e6:.3f}"
    assert cells[head.index("STM32L4R5 M cycles (published)")] == (
        "X-CUBE-AI 5.2 (43.4 ms); TFLM reference kernels 21.8 (181.9 ms)")
    assert [c.strip() for c in lines[3].strip("|").split("|")][
        head.index("STM32L4R5 M cycles (published)")] == "-"
