"""Engine benchmark: platform overhead per step, cached reruns, static int8 on the demo model.

Usage: ``.venv/bin/python bench/engine.py [--repeats 5] [--out bench/results/engine.json]``

* Overhead per step: wall time of one engine step (fork a worker, JSON job, run, store the
  artifact, record the step) against calling the same library functions directly in a warm
  process. Goal: under 10% or 150 ms.
* Cached rerun: a whole pipeline (three steps plus both evaluations) run again. Goal: < 1 s.
* Static int8 per-channel on the demo CNN: accuracy drop (goal <= 0.5 points) and size
  ratio against float32 ONNX (goal >= 3.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tinymlaas.domain.units import human_bytes

console = Console(width=120)


def _direct_calls(onnx_path: Path, calibration: np.ndarray, work: Path) -> dict:
    """The library calls each transformer makes, timed in this (warm) process."""
    import onnx
    import onnxruntime as ort
    import onnxsim
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    def fuse() -> None:
        model, _ = onnxsim.simplify(onnx.load(str(onnx_path)))
        onnx.save(model, str(work / "fused.onnx"))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(work / "fused.onnx")
        ort.InferenceSession(str(work / "fused.onnx"), options)

    def preprocess() -> str:
        model = onnx.load(str(onnx_path))
        del model.graph.value_info[:]
        onnx.save(model, str(work / "clean.onnx"))
        quant_pre_process(str(work / "clean.onnx"), str(work / "pre.onnx"),
                          skip_symbolic_shape=True)
        return str(work / "pre.onnx")

    def dynamic() -> None:
        quantize_dynamic(preprocess(), str(work / "dyn.onnx"), weight_type=QuantType.QInt8)

    class Reader:
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x[None]}

    def static() -> None:
        quantize_static(preprocess(), str(work / "static.onnx"), Reader(),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False})

    return {"fuse": fuse, "quantize-dynamic": dynamic, "quantize-static": static}


def clear_step_cache(svc) -> None:
    from sqlalchemy import delete

    from tinymlaas.store.tables import StepCacheRow

    with svc.meta.session() as session:
        session.execute(delete(StepCacheRow))


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/engine.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ["TINYMLAAS_HOME"] = str(tmp_path / "home")
        from tinymlaas.config import get_settings
        from tinymlaas.demo import train_digits_cnn
        from tinymlaas.domain import Pipeline
        from tinymlaas.evaluation.runtime import fit_to_input
        from tinymlaas.service import Services

        get_settings.cache_clear()
        svc = Services()
        console.print("training the demo CNN...")
        pt2, _ = train_digits_cnn(tmp_path / "digits-cnn.pt2")
        model = svc.add_model(pt2, "digits-cnn")
        dataset = svc.add_dataset("digits")

        def run(steps: list, evaluate: bool = True, name: str = "bench"):
            pipeline = Pipeline.model_validate({"name": name, "steps": steps,
                                                "evaluate": evaluate})
            created = svc.create_run(pipeline, model=model.id, dataset=dataset.id)
            start = time.perf_counter()
            result = svc.execute_run(created.id)
            assert result.status == "succeeded", result.error
            return result, time.perf_counter() - start

        baseline, _ = run(["export-onnx"], name="baseline")
        onnx_path = svc.artifact_path(baseline.output_sha)
        onnx_model = svc.add_model(onnx_path, "digits-cnn-onnx")

        from tinymlaas.formats.datasets import read_canonical, split_indices

        X, _ = read_canonical(svc.artifact_path(dataset.artifact_sha))
        calib = fit_to_input(X[split_indices(len(X), dataset.splits)["calibration"]],
                             ["N", 1, 8, 8])
        direct = _direct_calls(onnx_path, calib, tmp_path)

        rows = []
        for name, fn in direct.items():
            library = _time(fn, args.repeats)
            engine = []
            for i in range(args.repeats + 1):
                clear_step_cache(svc)  # measure the work, not a cache hit
                pipeline = Pipeline.model_validate({"name": name, "steps": [name],
                                                    "evaluate": False})
                created = svc.create_run(pipeline, model=onnx_model.id, dataset=dataset.id)
                start = time.perf_counter()
                result = svc.execute_run(created.id)
                elapsed = time.perf_counter() - start
                assert result.status == "succeeded", result.error
                assert result.steps[0].status == "succeeded"
                if i:  # the first one warms the fork server
                    engine.append(elapsed)
            lib, eng = statistics.median(library), statistics.median(engine)
            rows.append({"step": name, "library_s": lib, "engine_s": eng,
                         "overhead_s": eng - lib, "overhead_pct": (eng - lib) / lib * 100,
                         "goal_met": (eng - lib) < 0.150 or (eng - lib) / lib < 0.10})

        pipeline_steps = ["export-onnx", "fuse", {"quantize-static": {"per_channel": True}}]
        first, first_s = run(pipeline_steps, name="static-int8")
        reruns = [run(pipeline_steps, name="static-int8")[1] for _ in range(args.repeats)]
        cached = {"first_run_s": first_s, "cached_rerun_s": statistics.median(reruns),
                  "goal_met": statistics.median(reruns) < 1.0}

        fp32, int8 = baseline.result, first.result
        quality = {"fp32_accuracy": fp32["accuracy"], "int8_accuracy": int8["accuracy"],
                   "accuracy_drop": fp32["accuracy"] - int8["accuracy"],
                   "fp32_bytes": fp32["file_bytes"], "int8_bytes": int8["file_bytes"],
                   "size_ratio": fp32["file_bytes"] / int8["file_bytes"],
                   "fp32_latency_ms": fp32["latency_ms_p50"],
                   "int8_latency_ms": int8["latency_ms_p50"]}
        quality["goal_met"] = quality["accuracy_drop"] <= 0.5 and quality["size_ratio"] >= 3.5
        svc.close()

    table = Table(title="Platform overhead per step (median, warm fork server)")
    for col in ("step", "library", "engine step", "overhead", "goal (<10% or <150 ms)"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["step"], f"{r['library_s'] * 1e3:.0f} ms", f"{r['engine_s'] * 1e3:.0f} ms",
                      f"{r['overhead_s'] * 1e3:+.0f} ms ({r['overhead_pct']:+.1f}%)",
                      "met" if r["goal_met"] else "missed")
    console.print(table)
    table = Table(title="Pipeline export-onnx → fuse → quantize-static, with evaluation")
    for col in ("first run", "cached rerun", "goal (< 1 s)"):
        table.add_column(col)
    table.add_row(f"{cached['first_run_s']:.2f} s", f"{cached['cached_rerun_s'] * 1e3:.0f} ms",
                  "met" if cached["goal_met"] else "missed")
    console.print(table)
    table = Table(title="Static int8 (QDQ, per-channel, MinMax) on the demo CNN vs float32 ONNX")
    for col in ("fp32 acc", "int8 acc", "drop (goal <= 0.5)", "fp32 size", "int8 size",
                "ratio (goal >= 3.5x)", "fp32 p50", "int8 p50"):
        table.add_column(col)
    q = quality
    table.add_row(f"{q['fp32_accuracy']:.2f}%", f"{q['int8_accuracy']:.2f}%",
                  f"{q['accuracy_drop']:.2f}", human_bytes(q["fp32_bytes"]),
                  human_bytes(q["int8_bytes"]), f"{q['size_ratio']:.2f}x",
                  f"{q['fp32_latency_ms']:.3f} ms", f"{q['int8_latency_ms']:.3f} ms")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"overhead": rows, "cached_rerun": cached,
                                    "static_int8": quality, "repeats": args.repeats,
                                    "python": sys.version.split()[0], "cpus": os.cpu_count()},
                                   indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
