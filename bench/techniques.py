"""Benchmark of the compression techniques on the demo digits CNN.

Trains the demo CNN, runs every technique and useful chains as real runs, then the
auto-compression search with a 1-point accuracy budget. Prints a table and writes
``bench/results/techniques.json``. Usage: ``python bench/techniques.py [--budget 5m]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

CHAINS: dict[str, list[tuple[str, dict]]] = {
    "baseline (fp32 ONNX)": [("export-onnx", {})],
    "static int8 (PTQ)": [("export-onnx", {}), ("quantize-static", {})],
    "prune-structured 50%": [("prune-structured", {"ratio": 0.5}), ("export-onnx", {})],
    "prune-structured 50% + int8": [("prune-structured", {"ratio": 0.5}), ("export-onnx", {}),
                                    ("quantize-static", {})],
    "prune-magnitude 80%": [("prune-magnitude", {"sparsity": 0.8}), ("export-onnx", {})],
    "sparsify 2:4": [("sparsify", {}), ("export-onnx", {})],
    "factorize-lowrank 25%": [("factorize-lowrank", {"rank_ratio": 0.25,
                                                     "include_convs": False}),
                              ("export-onnx", {})],
    "distill width 0.5": [("distill", {"width": 0.5}), ("export-onnx", {})],
    "distill 0.5 + int8": [("distill", {"width": 0.5}), ("export-onnx", {}),
                           ("quantize-static", {})],
    "qat int8": [("qat", {})],
    "prune 50% + qat": [("prune-structured", {"ratio": 0.5}), ("qat", {})],
    "prune 50% + distill 0.7 + qat": [("prune-structured", {"ratio": 0.5}),
                                      ("distill", {"width": 0.7}), ("qat", {})],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="5m", help="optimize search budget")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "techniques.json"))
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="tinymlaas-bench-"))
    os.environ["TINYMLAAS_HOME"] = str(home)
    from rich.console import Console
    from rich.table import Table

    from tinymlaas.config import Settings
    from tinymlaas.demo import train_digits_cnn
    from tinymlaas.domain import Pipeline, PipelineStep
    from tinymlaas.optimize import optimize
    from tinymlaas.service import Services

    console = Console(width=160)
    svc = Services(Settings(home=home))
    path, trained = train_digits_cnn(home / "digits-cnn.pt2", epochs=15)
    model = svc.add_model(path, "digits-cnn")
    dataset = svc.add_dataset("digits")
    console.print(f"demo CNN: {model.parameters:,} parameters, {trained:.2f}% test accuracy")

    rows = []
    for name, steps in CHAINS.items():
        pipeline = Pipeline(name="bench", steps=[PipelineStep(transformer=t, params=p)
                                                 for t, p in steps])
        run = svc.create_run(pipeline, model=model.id, dataset=dataset.id)
        started = time.monotonic()
        run = svc.execute_run(run.id)
        seconds = time.monotonic() - started
        if run.status.value not in {"succeeded", "degraded"}:  # degraded: still measured
            console.print(f"[red]{name} failed: {run.error}")
            continue
        if run.status.value == "degraded":
            console.print(f"[yellow]{name}: {run.error}")
        base, res = run.baseline, run.result
        extra = {}
        for step in run.steps:
            for key in ("sparsity", "bitmask_int8_weight_bytes", "csr_weight_bytes",
                        "n_m_weight_bytes", "ranks", "channel_ratio"):
                if key in step.metrics:
                    extra[key] = step.metrics[key]
        rows.append({"technique": name, "steps": [s.transformer for s in run.steps],
                     "accuracy": res["accuracy"], "accuracy_change":
                     res["accuracy"] - base["accuracy"], "file_bytes": res["file_bytes"],
                     "size_ratio": base["file_bytes"] / res["file_bytes"],
                     "parameters": res["parameters"], "macs": res["macs"],
                     "latency_ms_p50": res["latency_ms_p50"],
                     "speedup": base["latency_ms_p50"] / res["latency_ms_p50"],
                     "run_seconds": seconds, **extra})
        console.print(f"{name}: {res['accuracy']:.2f}% in {seconds:.0f} s")

    reference = rows[0]  # the fp32 ONNX model: same runtime as every other row
    for r in rows:
        r["size_vs_fp32_onnx"] = reference["file_bytes"] / r["file_bytes"]
        r["speedup_vs_fp32_onnx"] = reference["latency_ms_p50"] / r["latency_ms_p50"]
    table = Table(title="Techniques on the digits CNN (ratios against the fp32 ONNX model; "
                  "run s: 0-1 s when earlier runs cached the steps)")
    for column in ("technique", "accuracy", "Δ acc", "size", "size ×", "params", "MACs",
                   "p50 ms", "speed ×", "run s"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["technique"], f"{r['accuracy']:.2f}%", f"{r['accuracy_change']:+.2f}",
                      f"{r['file_bytes'] / 1024:.1f} KB", f"{r['size_vs_fp32_onnx']:.2f}x",
                      f"{r['parameters']:,}", f"{r['macs']:,}", f"{r['latency_ms_p50']:.3f}",
                      f"{r['speedup_vs_fp32_onnx']:.2f}x", f"{r['run_seconds']:.0f}")
    console.print(table)

    started = time.monotonic()
    result = optimize(svc, model.id, dataset.id, objective="size", max_accuracy_drop=1.0,
                      budget=args.budget)
    search_s = time.monotonic() - started
    from tinymlaas.cli.optimize import render_result

    render_result(result)
    best = next((c for c in result.candidates if c.run_id == result.recommended), None)
    summary = {
        "search_seconds": search_s, "candidates": len(result.candidates),
        "pareto": len(result.pareto),
        "recommended": None if best is None else {
            "steps": best.steps, "choice": best.choice, "accuracy": best.accuracy,
            "accuracy_drop": best.accuracy_drop, "file_bytes": best.file_bytes,
            "size_ratio": result.baseline["file_bytes"] / best.file_bytes,
            "found_after_seconds": best.found_after_s},
    }
    console.print(f"optimize: {summary}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "baseline_accuracy": trained, "baseline_parameters": model.parameters,
        "techniques": rows, "optimize": summary,
        "optimize_result": result.model_dump(mode="json")}, indent=2, default=str))
    console.print(f"wrote {out}")
    svc.close()


if __name__ == "__main__":
    main()
