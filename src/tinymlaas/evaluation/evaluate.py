"""The one evaluation every artifact gets.

Quality on the test split (task-aware), fidelity to the original model's outputs, file size,
parameters and weight bytes, MACs, latency (batch 1, one thread, after warm-up) and the
memory the model adds to its inference process (peak resident set over the idle process),
and the runtime that measured them (``runtime``: ``onnxruntime``, ``torch`` or ``c``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tinymlaas.domain import ArtifactKind, Device, Task, TensorSpec

__all__ = ["EVALUATION_VERSION", "SNR_CAP_DB", "cosines", "evaluate_model", "quality_metrics",
           "token_mask"]

#: Part of every evaluation's cache key: 2 records the runtime and the device verdict, 3 the
#: task metrics (MAE/RMSE, cosine min/p5/mean, max abs error and SNR), 4 leaves padding
#: tokens out of the fidelity of per-token outputs.
EVALUATION_VERSION = "4"
#: The input that marks a text model's real tokens (1) and its padding (0).
TOKEN_MASK_INPUT = "attention_mask"
#: The SNR reported for outputs identical to the reference.
SNR_CAP_DB = 300.0


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def token_mask(X: np.ndarray) -> np.ndarray | None:
    """The samples' attention mask (samples x sequence), when the model takes one."""
    names = X.dtype.names
    return np.asarray(X[TOKEN_MASK_INPUT]) if names and TOKEN_MASK_INPUT in names else None


def _real_tokens(outputs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Per-sample outputs, flattened, with padding positions zeroed: a per-token output
    (samples x sequence x ...) of a padded batch holds values for padding that nothing
    reads, and that quantization moves more than the real tokens'."""
    flat = outputs.astype(np.float64)
    if mask is not None and flat.ndim >= 3 and flat.shape[:2] == mask.shape:
        flat = flat * mask.reshape(*mask.shape, *([1] * (flat.ndim - 2)))
    return flat.reshape(len(flat), -1)


def cosines(outputs: np.ndarray, reference: np.ndarray,
            mask: np.ndarray | None = None) -> np.ndarray:
    """Per-sample cosine of ``outputs`` to ``reference`` (flattened; padding tokens left
    out under ``mask``)."""
    out, ref = _real_tokens(outputs, mask), _real_tokens(reference, mask)
    return (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
                                 + 1e-12)


def quality_metrics(task: Task, outputs: np.ndarray, y: np.ndarray,
                    reference: np.ndarray | None,
                    mask: np.ndarray | None = None) -> dict[str, float]:
    """Task-aware quality, plus fidelity to ``reference`` outputs (the input model's on the
    same samples) when given.

    classification: ``accuracy`` (percent); regression: ``mae``, ``rmse`` (and ``mse``);
    anomaly: ``auc``; against the reference: ``cosine_min``, ``cosine_p5``, ``cosine_mean``
    (per-sample cosine of the flattened outputs; ``cosine_to_original`` is the mean),
    ``max_abs_error`` and ``snr_db`` (signal power of the reference over the error's, in
    dB; ``SNR_CAP_DB`` when they are equal). :mod:`tinymlaas.domain.quality` says which
    is each task's primary metric. ``mask`` (:func:`token_mask`) leaves the padding
    positions of per-token outputs out of the comparison with the reference.
    """
    metrics: dict[str, float] = {}
    flat = outputs.reshape(len(outputs), -1)
    if task is Task.classification:
        metrics["accuracy"] = float(np.mean(flat.argmax(axis=1) == y) * 100.0)
    elif task is Task.regression:
        error = flat.astype(np.float64) - y.reshape(len(y), -1).astype(np.float64)
        metrics["mae"] = float(np.mean(np.abs(error)))
        metrics["mse"] = float(np.mean(error ** 2))
        metrics["rmse"] = float(np.sqrt(metrics["mse"]))
    elif task is Task.anomaly:
        from sklearn.metrics import roc_auc_score

        # Reconstruction error against the input is the anomaly score; y marks anomalies.
        metrics["score_mean"] = float(flat.mean())
        if len(np.unique(y)) == 2:
            metrics["auc"] = float(roc_auc_score(y, flat.mean(axis=1)))
    if reference is not None:
        out, ref = _real_tokens(outputs, mask), _real_tokens(reference, mask)
        diff = np.abs(out - ref)
        metrics["max_abs_diff"] = float(diff.max())
        metrics["mean_abs_diff"] = float(diff.mean())
        metrics["max_abs_error"] = metrics["max_abs_diff"]
        noise = float(np.mean((out - ref) ** 2))
        signal = float(np.mean(ref ** 2))
        # Capped so that stored metrics stay finite JSON (identical outputs: the cap).
        metrics["snr_db"] = SNR_CAP_DB if noise == 0.0 else \
            min(SNR_CAP_DB, float(10.0 * np.log10(max(signal, 1e-300) / noise)))
        if task is Task.classification:
            metrics["top1_agreement"] = float(np.mean(flat.argmax(1) == ref.argmax(1)) * 100.0)
        if task is not Task.classification:
            cosine = cosines(outputs, reference, mask)
            metrics["cosine_min"] = float(cosine.min())
            metrics["cosine_p5"] = float(np.percentile(cosine, 5))
            metrics["cosine_mean"] = float(cosine.mean())
            metrics["cosine_to_original"] = metrics["cosine_mean"]
    return metrics


def _static(path: Path, kind: ArtifactKind, runner: Any,
            X: np.ndarray | None = None) -> dict[str, int]:
    if kind is ArtifactKind.c_source:
        result = runner.result
        return {"weight_bytes": result.const_bytes, "macs": result.macs,
                "arena_bytes": result.arena_bytes, "io_bytes": result.io_bytes}
    if kind is ArtifactKind.onnx:
        import onnx

        from tinymlaas.evaluation.static import graph_stats, sample_shapes

        # MACs at the dataset's sequence length (and batch 1), not a guessed one
        shapes = sample_shapes(X, [s.name for s in runner.inputs]) if X is not None else None
        stats = graph_stats(onnx.load(str(path)), input_shapes=shapes)
        return {"parameters": stats.parameters, "weight_bytes": stats.weight_bytes,
                "macs": stats.macs}
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module = runner.module
    tensors = [*module.parameters(), *module.buffers()]
    from tinymlaas.formats.torch_models import example_tensors

    # ids within the vocabulary, masks of ones: float zeros break an embedding layer
    example = example_tensors(path, kind, runner.inputs)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*example)
    return {"parameters": int(sum(p.numel() for p in module.parameters())),
            "weight_bytes": int(sum(t.numel() * t.element_size() for t in tensors)),
            "macs": int(counter.get_total_flops() // 2)}


def _file_bytes(path: Path, kind: ArtifactKind, runner: Any) -> int:
    """Bytes of the deployable model: the file, or for generated C its constant data."""
    if kind is ArtifactKind.c_source:
        return int(runner.result.const_bytes)
    return os.path.getsize(path)


def device_fit(path: Path, kind: ArtifactKind, runner: Any, device: Device) -> dict[str, Any]:
    """The fit verdict for ``device``: flash, RAM, margins, reasons, a latency estimate.

    ONNX models are analysed statically (the compiler's memory planner); generated C uses
    the figures it was compiled with. PyTorch files get no verdict: export them first.
    """
    from tinymlaas.devices.analysis import Analysis, analyze_model, fit_verdict

    if kind is ArtifactKind.onnx:
        fit = analyze_model(path, device).fit
    elif kind is ArtifactKind.c_source:
        result = runner.result
        analysis = Analysis(model=result.name, parameters=0, weight_bytes=result.const_bytes,
                            activation_bytes=result.arena_bytes, io_bytes=result.io_bytes,
                            macs=result.macs, quantized=result.quantized,
                            memory_source="compiler", operators=[], unsupported={})
        fit = fit_verdict(analysis, device, runtime="c")
    else:
        return {}
    return {"fit": fit.model_dump(mode="json")} if fit is not None else {}


def evaluate_model(path: Path, kind: ArtifactKind, task: Task, X: np.ndarray, y: np.ndarray,
                   *, inputs: list[TensorSpec] | None = None,
                   reference: np.ndarray | None = None, device: Device | None = None,
                   latency_runs: int = 200,
                   latency_budget_s: float = 3.0,
                   progress: Callable[[float, str], None] = lambda f, m: None,
                   ) -> tuple[dict[str, Any], np.ndarray]:
    """Evaluate one model file; returns the metrics and its outputs on ``X``."""
    from tinymlaas.evaluation.runtime import open_runner

    progress(0.05, "loading")
    peak_resettable = _reset_peak_rss()
    rss_before_kb = _proc_status_kb("VmRSS")
    runner = open_runner(path, kind, inputs)
    progress(0.2, f"inference on {len(X)} test samples")
    outputs = runner.predict(X)
    metrics: dict[str, Any] = {"runtime": runner.runtime, "task": task.value,
                               "file_bytes": _file_bytes(path, kind, runner),
                               "test_samples": len(X)}
    metrics.update(quality_metrics(task, outputs, y, reference, token_mask(X)))
    progress(0.6, "latency")
    x1 = runner.prepare(X[:1])
    for _ in range(10):
        runner.time_one(x1)
    times: list[float] = []
    deadline = time.perf_counter() + latency_budget_s
    while len(times) < latency_runs and (len(times) < 20 or time.perf_counter() < deadline):
        times.append(runner.time_one(x1))
    metrics["latency_ms_p50"] = float(np.percentile(times, 50) * 1e3)
    metrics["latency_ms_p95"] = float(np.percentile(times, 95) * 1e3)
    metrics["latency_runs"] = len(times)
    if peak_resettable:
        metrics["peak_memory_mb"] = max(0, _proc_status_kb("VmHWM") - rss_before_kb) / 1024
    progress(0.9, "static analysis")
    metrics.update(_static(path, kind, runner, X))
    if device is not None:
        metrics.update(device_fit(path, kind, runner, device))
    return metrics, outputs
