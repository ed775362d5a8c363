"""Benchmark of the ONNX -> C compiler.

Per model: latency of the generated C on this host (batch 1, one thread) next to TFLite
Micro's host interpreter (when a ``.tflite`` twin sits beside the ``.onnx``) and ONNX
Runtime (one thread); the arena against TFLite Micro's smallest working arena (found by
bisection); the Cortex-M4 firmware's flash against the weight bytes; the planner's figures
against the ELF sections; and output agreement.

Usage::

    python bench/compiler.py [model.onnx ...] [--json bench/results/compiler.json]

Without arguments it benchmarks a digits CNN (float and int8 QDQ) it trains itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tinymlaas.compiler import CompileResult, HostModel, build_program, compile_onnx
from tinymlaas.compiler.cortex_m import run_cortex_m, toolchain_missing
from tinymlaas.compiler.instructions import count_instructions
from tinymlaas.compiler.planner import outside_bytes
from tinymlaas.compiler.verify import agreement, output_lsb, reference_outputs
from tinymlaas.evaluation.static import graph_stats

ROOT = Path(__file__).resolve().parent

#: Published MLPerf Tiny v1.0 closed-division figures on an STM32L4R5 (Cortex-M4 at
#: 120 MHz), by a lower-case part of the model file's name: (system, ms, cycles).
PUBLISHED_STM32L4R5 = {
    "kws": [("X-CUBE-AI", 43.4, 5.2e6), ("TFLM reference kernels", 181.9, 21.8e6)],
}
_KWS_NAMES = ("kws", "ds_cnn", "dscnn", "keyword")


def published_figures(label: str) -> list[tuple[str, float, float]]:
    """The published STM32L4R5 figures for a model, by its name (KWS only, today)."""
    name = label.lower()
    return PUBLISHED_STM32L4R5["kws"] if any(k in name for k in _KWS_NAMES) else []


# ----------------------------------------------------------------------------- models
def digits_models(work: Path) -> tuple[list[tuple[str, Path]], np.ndarray, np.ndarray]:
    """Train a digits CNN (>100k parameters) for a few seconds; float and int8 QDQ ONNX."""
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1400], order[1400:]
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(32 * 4 * 4, 192), torch.nn.ReLU(),
        torch.nn.Linear(192, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(8):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[i:i + 64]), yt[i:i + 64]).backward()
            opt.step()
    net.eval()
    float_path = work / "digits_cnn_fp32.onnx"
    torch.onnx.export(net, (xt[:1],), str(float_path), dynamo=True, external_data=False,
                      input_names=["image"], verbose=False,
                      dynamic_shapes={"input": {0: torch.export.Dim("batch")}})
    calibration = x[train[:128]]
    name = "image"

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    pre = work / "digits_pre.onnx"
    quant_pre_process(str(float_path), str(pre))
    int8_path = work / "digits_cnn_int8.onnx"
    quantize_static(str(pre), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    return ([("digits-cnn fp32", float_path), ("digits-cnn int8", int8_path)],
            x[test], y[test])


# ----------------------------------------------------------------------------- timing
def best_ms(call: Callable[[], object], budget_s: float = 0.3, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean time per call, each round about ``budget_s``."""
    call()
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    repeat = max(1, int(budget_s / once))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        samples.append((time.perf_counter() - start) / repeat * 1000)
    return float(np.median(samples))


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """TFLite Micro prints allocation failures on fd 2 while we bisect."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def tflm_interpreter(path: Path, arena: int):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_file(str(path), arena_size=arena)


def tflm_min_arena(path: Path, sample: np.ndarray) -> int:
    """Smallest arena (16-byte resolution) with which TFLite Micro allocates and runs."""

    def works(size: int) -> bool:
        try:
            with quiet_stderr():
                interpreter = tflm_interpreter(path, size)
                interpreter.set_input(sample, 0)
                interpreter.invoke()
            return True
        except RuntimeError:
            return False

    low, high = 256, 1 << 16
    while not works(high):
        low, high = high, high * 2
        if high > 1 << 28:
            raise RuntimeError("TFLite Micro does not run this model")
    while high - low > 16:
        middle = (low + high) // 2
        if works(middle):
            high = middle
        else:
            low = middle
    return high


# ----------------------------------------------------------------------------- measure
def sample_inputs(result: CompileResult, count: int, seed: int = 0) -> np.ndarray:
    spec = result.inputs[0]
    rng = np.random.default_rng(seed)
    shape = (count, *spec.shape[1:])
    if spec.dtype in ("int8", "uint8"):
        info = np.iinfo(spec.dtype)
        return rng.integers(info.min, info.max + 1, shape).astype(spec.dtype)
    return rng.normal(size=shape).astype(np.float32)


def measure(label: str, path: Path, work: Path, inputs: np.ndarray | None,
            labels: np.ndarray | None, *, fuse_residual: bool = True) -> dict:
    import onnx
    import onnxruntime as ort

    result = compile_onnx(path, work / label.replace(" ", "_"), name="model",
                          fuse_residual=fuse_residual)
    host = HostModel(result)
    if inputs is None:
        inputs = sample_inputs(result, 64)
    proto = onnx.load(str(path))
    stats = graph_stats(proto)
    row: dict = {
        "model": label,
        "path": str(path),
        "parameters": stats.parameters,
        "macs": result.macs,
        "quantized": result.quantized,
        "weight_bytes": result.const_bytes,
        "arena_bytes": result.arena_bytes,
        "io_bytes": result.io_bytes,
        "io": result.io,
        "kernels": result.kernel_calls,
        "fuse_residual": fuse_residual,
    }
    # The same model with the input and output in the caller's arrays (io="caller").
    caller, _ = build_program(path, fuse_residual=fuse_residual, io="caller")
    row["caller_io_arena_bytes"] = caller.arena_bytes
    row["caller_io_bytes"] = outside_bytes(caller)

    # Agreement with ONNX Runtime (and accuracy when labels are known).
    got = host.run(inputs)
    (ref,) = reference_outputs(path, inputs)
    figures = agreement(got, ref, lsb=output_lsb(proto))
    row["vs_onnxruntime"] = figures.model_dump()
    if labels is not None:
        row["accuracy_c"] = float(np.mean(got.argmax(1) == labels))
        row["accuracy_onnxruntime"] = float(np.mean(ref.argmax(1) == labels))

    # Latency, batch 1.
    x1 = np.ascontiguousarray(inputs[:1])
    out = np.zeros(result.outputs[0].shape, dtype=result.outputs[0].dtype)
    fn, px, py = host._fn, x1.ctypes.data, out.ctypes.data  # direct call: no numpy work
    row["c_ms"] = best_ms(lambda: fn(px, py))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x1}
    row["onnxruntime_ms"] = best_ms(lambda: session.run(None, feed))
    row["c_vs_onnxruntime"] = row["c_ms"] / row["onnxruntime_ms"]

    twin = path.with_suffix(".tflite")
    if twin.is_file():
        interpreter = tflm_interpreter(twin, 8 << 20)
        interpreter.set_input(x1, 0)
        row["tflm_ms"] = best_ms(interpreter.invoke)
        row["c_vs_tflm"] = row["c_ms"] / row["tflm_ms"]
        outs = []
        for i in range(len(inputs)):
            interpreter.set_input(np.ascontiguousarray(inputs[i:i + 1]), 0)
            interpreter.invoke()
            outs.append(interpreter.get_output(0).copy())
        row["vs_tflm"] = agreement(got, np.concatenate(outs), lsb=output_lsb(proto)).model_dump()
        row["tflm_arena_bytes"] = tflm_min_arena(twin, x1)
        row["arena_vs_tflm"] = result.arena_bytes / row["tflm_arena_bytes"]
        row["arena_io_vs_tflm"] = (result.arena_bytes + result.io_bytes) / row["tflm_arena_bytes"]

    # Cortex-M4 firmware under QEMU.
    if not toolchain_missing():
        build = run_cortex_m(result, [inputs[:4]], work / (label.replace(" ", "_") + "_fw"))
        qemu = np.stack([s[0][0] for s in build.outputs])
        host4 = host.run(inputs[:4])
        row["elf"] = build.sizes.model_dump()
        row["elf_flash_bytes"] = build.sizes.flash_bytes
        row["elf_ram_bytes"] = build.sizes.ram_bytes
        row["sample_bytes"] = build.sample_bytes
        row["code_overhead_bytes"] = build.code_overhead_bytes
        row["qemu_equals_host"] = bool(np.array_equal(qemu, host4))
        row["qemu_vs_host_max_rel_err"] = agreement(qemu, host4).max_rel_err
        # Retired instructions per inference on the same firmware (portable kernels), and
        # on the Cortex-M4 target's own kernel set, QEMU -icount.
        counts = count_instructions(build)
        row["m4_instructions"] = counts.instructions
        row["m4_instructions_per_inference"] = counts.per_inference
        row["m4_instructions_per_mac"] = counts.instructions / max(result.macs, 1)
        row["m4_method"] = counts.method
        by_set = {result.kernel_set: counts.instructions}
        m4 = compile_onnx(path, work / (label.replace(" ", "_") + "_m4"), name="model",
                          fuse_residual=fuse_residual, target="cortex-m4")
        if m4.kernel_set not in by_set:
            m4_build = run_cortex_m(m4, [inputs[:4]], work / (label.replace(" ", "_") + "_m4fw"))
            m4_out = np.stack([s[0][0] for s in m4_build.outputs])
            row["m4_kernels_equal_portable"] = bool(np.array_equal(m4_out, qemu))
            by_set[m4.kernel_set] = count_instructions(m4_build).instructions
        row["m4_instructions_by_kernel_set"] = by_set
        if len(by_set) > 1:
            row["m4_dsp_vs_portable"] = by_set[m4.kernel_set] / counts.instructions
        published = published_figures(label)
        if published:
            row["published_stm32l4r5"] = [
                {"system": system, "ms": ms, "cycles": cycles,
                 "m4_instructions_vs_cycles": counts.instructions / cycles}
                for system, ms, cycles in published]
    return row


# ----------------------------------------------------------------------------- report
def _kb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


COLUMNS = [
    ("model", lambda r: r["model"]),
    ("params", lambda r: f"{r['parameters']:,}"),
    ("weights KiB", lambda r: _kb(r["weight_bytes"])),
    ("arena KiB", lambda r: _kb(r["arena_bytes"])),
    ("arena+IO KiB", lambda r: _kb(r["arena_bytes"] + r["io_bytes"])),
    ("caller-IO arena+IO KiB", lambda r: _kb(r["caller_io_arena_bytes"] + r["caller_io_bytes"])
     if "caller_io_bytes" in r else "-"),
    ("TFLM arena KiB", lambda r: _kb(r.get("tflm_arena_bytes"))),
    ("arena+IO / TFLM", lambda r: _num(r.get("arena_io_vs_tflm"), "{:.2f}x")),
    ("C ms", lambda r: _num(r["c_ms"])),
    ("TFLM ms", lambda r: _num(r.get("tflm_ms"))),
    ("C / TFLM", lambda r: _num(r.get("c_vs_tflm"), "{:.2f}x")),
    ("M4 M instr", lambda r: _num(r.get("m4_instructions") and r["m4_instructions"] / 1e6)),
    ("instr/MAC", lambda r: _num(r.get("m4_instructions_per_mac"), "{:.2f}")),
    ("M4 DSP M instr", lambda r: _num(_dsp(r) and _dsp(r) / 1e6)),
    ("DSP / portable", lambda r: _num(r.get("m4_dsp_vs_portable"), "{:.2f}x")),
    ("STM32L4R5 M cycles (published)", lambda r: _published(r)),
    ("ORT ms", lambda r: _num(r["onnxruntime_ms"])),
    ("C / ORT", lambda r: _num(r["c_vs_onnxruntime"], "{:.2f}x")),
    ("ELF flash KiB", lambda r: _kb(r.get("elf_flash_bytes"))),
    ("code KiB", lambda r: _kb(r.get("code_overhead_bytes"))),
    ("ELF RAM KiB", lambda r: _kb(r.get("elf_ram_bytes"))),
    ("agreement", lambda r: _agreement(r)),
]


def _dsp(row: dict) -> int | None:
    return row.get("m4_instructions_by_kernel_set", {}).get("cortex-m-dsp")


def _published(row: dict) -> str:
    figures = row.get("published_stm32l4r5")
    if not figures:
        return "-"
    return "; ".join(f"{f['system']} {f['cycles'] / 1e6:.1f} ({f['ms']} ms)"
                     for f in figures)


def _agreement(row: dict) -> str:
    parts = []
    for key, name in (("vs_tflm", "TFLM"), ("vs_onnxruntime", "ORT")):
        figures = row.get(key)
        if not figures:
            continue
        if figures.get("fraction_within_1lsb") is not None:
            parts.append(f"{name} {100 * figures['fraction_within_1lsb']:.1f}% <=1LSB "
                         f"({100 * figures['exact_fraction']:.0f}% exact)")
        else:
            parts.append(f"{name} rel {figures['max_rel_err']:.1e}")
    if "qemu_equals_host" in row:
        parts.append("QEMU=host" if row["qemu_equals_host"]
                     else f"QEMU~host {row['qemu_vs_host_max_rel_err']:.0e}")
    return "; ".join(parts)


def table(rows: list[dict]) -> str:
    """A Markdown table of the results."""
    head = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fn(r) for _, fn in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", type=Path, help="extra .onnx files")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "compiler.json")
    parser.add_argument("--no-digits", action="store_true", help="skip the digits CNN")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-compiler-") as tmp:
        work = Path(tmp)
        if not args.no_digits:
            models, x_test, y_test = digits_models(work)
            for label, path in models:
                rows.append(measure(label, path, work, x_test, y_test))
                print(f"measured {label}", file=sys.stderr)
        for path in args.models:
            rows.append(measure(path.stem, path.resolve(), work, None, None))
            print(f"measured {path.stem}", file=sys.stderr)
            if any(k.startswith(("tm_qconv2d_add", "tm_conv2d_add")) for k in rows[-1]["kernels"]):
                label = f"{path.stem} (unfused)"
                rows.append(measure(label, path.resolve(), work, None, None,
                                    fuse_residual=False))
                print(f"measured {label}", file=sys.stderr)
    print(table(rows))
    published = "; ".join(f"{system} {ms} ms ({cycles / 1e6:.1f} M cycles)"
                          for system, ms, cycles in PUBLISHED_STM32L4R5["kws"])
    print("\nM4 M instr: instructions retired per inference (the most over the samples) by "
          "the Cortex-M4 firmware under qemu-system-arm -M mps2-an386 -icount shift=6, a "
          "repeatable count, not cycles, with the portable kernels; M4 DSP M instr: the same "
          "with the cortex-m4 target's cortex-m-dsp kernels. Published STM32L4R5 (Cortex-M4, "
          f"120 MHz) figures for KWS: {published}.")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    args.json.write_text(json.dumps({"host": meta, "results": rows}, indent=2) + "\n")
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
