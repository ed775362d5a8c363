"""Benchmark of the default int8 (``auto-int8``) on each model family, against fp32.

For every family: fidelity to fp32 (embedding cosine min/mean, or top-1 agreement and
accuracy), size and speed ratios (ONNX Runtime, batch 1, one thread) of ``auto-int8`` and of
ONNX Runtime's own ``quantize_dynamic(per_channel=True)`` as the anchor, in the same run.
Models are built here (a BERT-like sentence embedder, a ViT-like classifier and a GPT-2-like
causal LM from ``transformers`` configs with random weights, the demo digits CNN trained for
a few epochs); nothing is downloaded.

``--hf-folder DIR`` adds a trained model of the user's own: a Hugging Face folder
(``save_pretrained`` output: ``config.json``, ``model.safetensors``, tokenizer files),
imported the way ``tinymlaas models add DIR`` does and measured on generated English
sentences (fidelity: cosine of the first output on the real tokens).

Prints a table and writes ``bench/results/models.json``.
Usage: ``python bench/models.py [--small] [--hf-folder DIR] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the model builders shared with the tests

#: A MiniLM-sized encoder (6 layers, 384 wide, 30522-token vocabulary: 22.4 M parameters),
#: and a tiny one for the smoke test.
BERT_SIZES = {"full": {"layers": 6, "hidden": 384, "heads": 12, "vocab": 30522},
              "small": {"layers": 2, "hidden": 64, "heads": 2, "vocab": 1000}}


def _latency_ms(paths: dict[str, Path], feed: dict[str, np.ndarray], seconds: float
                ) -> dict[str, float]:
    """Median batch-1 latency of each model, one thread, measured in interleaved rounds so
    that load from other processes affects every model alike."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {k: ort.InferenceSession(str(p), options) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for session in sessions.values():
        for _ in range(3):
            session.run(None, feed)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or min(len(t) for t in times.values()) < 5:
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _auto_int8(model: Path, access: Any, out: Path, **params: Any
               ) -> tuple[Path, dict[str, Any]]:
    from tinymlaas.domain import ArtifactKind
    from tinymlaas.transformers.base import StepContext
    from tinymlaas.transformers.registry import get_transformer, validate_params

    out.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(input_path=model, input_kind=ArtifactKind.onnx,
                      params=validate_params("auto-int8", params), out_dir=out, work_dir=out,
                      dataset=access)
    result = get_transformer("auto-int8").run(ctx)
    return result.path, result.metrics


def _anchor(model: Path, out: Path) -> Path:
    """ONNX Runtime's own dynamic int8, per-channel, other options at their defaults (the
    exporter's ``value_info`` is dropped first: ORT's shape inference trips on it)."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    proto = onnx.load(str(model))
    del proto.graph.value_info[:]
    clean = out.with_suffix(".clean.onnx")
    onnx.save(proto, str(clean))
    quantize_dynamic(str(clean), str(out), per_channel=True)
    return out


def _rows(family: str, paths: dict[str, Path], fidelity: dict[str, dict[str, float]],
          latency: dict[str, float], extra: dict[str, Any],
          input_shapes: dict[str, list[int]] | None = None) -> list[dict[str, Any]]:
    import onnx

    from tinymlaas.evaluation.static import graph_stats

    base = paths["fp32"]
    rows = []
    for name, path in paths.items():
        stats = graph_stats(onnx.load(str(path)), input_shapes=input_shapes)
        rows.append({"family": family, "method": name, "file_bytes": os.path.getsize(path),
                     "size_x": os.path.getsize(base) / os.path.getsize(path),
                     "latency_ms": latency[name], "speed_x": latency["fp32"] / latency[name],
                     "parameters": stats.parameters, "macs": stats.macs,
                     **fidelity[name], **(extra if name == "auto-int8" else {})})
    return rows


def bench_bert(work: Path, size: str, samples: int, seq: int, seconds: float
               ) -> list[dict[str, Any]]:
    import onnxruntime as ort

    from hf_models import bert_inputs, write_bert_embedder, write_canonical_tokens
    from tinymlaas.domain import DatasetSplits, Task
    from tinymlaas.transformers.base import DatasetAccess

    config = BERT_SIZES[size]
    model = write_bert_embedder(work / "bert.onnx", **config)
    vocab = config["vocab"]
    data = write_canonical_tokens(work / "tokens.npz", bert_inputs(256, seq, vocab, seed=3))
    access = DatasetAccess(path=data, task=Task.embedding, splits=DatasetSplits())
    auto, metrics = _auto_int8(model, access, work / "auto")
    # the alternative auto-int8 did not pick: static, sensitive nodes kept in float
    static, _ = _auto_int8(model, access, work / "static", strategy="static")
    paths = {"fp32": model, "auto-int8": auto,
             "ort quantize_dynamic per_channel": _anchor(model, work / "ort.onnx"),
             "auto-int8 strategy=static": static}
    feed = bert_inputs(samples, seq, vocab, seed=11)  # never seen by calibration
    ref = ort.InferenceSession(str(model)).run(None, feed)[0]
    fidelity = {}
    for name, path in paths.items():
        out = ort.InferenceSession(str(path)).run(None, feed)[0]
        cosine = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
        fidelity[name] = {"cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean())}
    one = {k: v[:1] for k, v in feed.items()}
    latency = _latency_ms(paths, one, seconds)
    family = f"bert-embedder {config['layers']}x{config['hidden']} seq {seq}"
    return _rows(family, paths, fidelity, latency,
                 {"strategy": metrics["strategy"], "op_counts": metrics["op_counts"]},
                 {name: [1, seq] for name in feed})


#: A ViT-Tiny-like classifier at 224 pixels, and a tiny one for the smoke test.
VIT_SIZES = {"full": {"layers": 6, "hidden": 192, "heads": 3, "image": 224, "patch": 16},
             "small": {"layers": 2, "hidden": 64, "heads": 2, "image": 32, "patch": 8}}


def bench_vit(work: Path, size: str, samples: int, seconds: float) -> list[dict[str, Any]]:
    import onnxruntime as ort

    from hf_models import vit_images, write_vit_classifier
    from tinymlaas.domain import DatasetSplits, Task
    from tinymlaas.transformers.base import DatasetAccess

    config = VIT_SIZES[size]
    model = write_vit_classifier(work / "vit.onnx", **config)
    calibration = vit_images(64, config["image"], seed=3)
    data = work / "images.npz"
    np.savez(data, X=calibration, y=np.zeros(len(calibration), np.int64))
    access = DatasetAccess(path=data, task=Task.classification, splits=DatasetSplits(),
                           num_classes=10)
    auto, metrics = _auto_int8(model, access, work / "auto")
    paths = {"fp32": model, "auto-int8": auto,
             "ort quantize_dynamic per_channel": _anchor(model, work / "ort.onnx")}
    feed = {"pixel_values": vit_images(samples, config["image"], seed=11)}
    ref = ort.InferenceSession(str(model)).run(None, feed)[0]
    fidelity = {}
    for name, path in paths.items():
        out = ort.InferenceSession(str(path)).run(None, feed)[0]
        cosine = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
        fidelity[name] = {"cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
                          "top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean() * 100)}
    latency = _latency_ms(paths, {"pixel_values": feed["pixel_values"][:1]}, seconds)
    family = f"vit-classifier {config['layers']}x{config['hidden']} {config['image']}px"
    return _rows(family, paths, fidelity, latency,
                 {"strategy": metrics["strategy"], "op_counts": metrics["op_counts"]})


#: A small GPT-2-like causal LM (6 layers x 384, 8192-token vocabulary), and a tiny one.
GPT_SIZES = {"full": {"layers": 6, "hidden": 384, "heads": 6, "vocab": 8192,
                      "positions": 256},
             "small": {"layers": 2, "hidden": 64, "heads": 2, "vocab": 256, "positions": 64}}


def bench_gpt(work: Path, size: str, samples: int, seq: int, seconds: float
              ) -> list[dict[str, Any]]:
    """A causal LM without a cache (ids and mask in, logits out): fidelity is the cosine of
    each sample's logits (its real tokens' positions) to fp32, and next-token agreement."""
    import onnxruntime as ort

    from hf_models import causal_lm_inputs, write_canonical_tokens, write_causal_lm
    from tinymlaas.domain import DatasetSplits, Task
    from tinymlaas.evaluation.evaluate import cosines
    from tinymlaas.transformers.base import DatasetAccess

    config = GPT_SIZES[size]
    model = write_causal_lm(work / "gpt.onnx", **config)
    vocab = config["vocab"]
    data = write_canonical_tokens(work / "ids.npz", causal_lm_inputs(128, seq, vocab, seed=3))
    access = DatasetAccess(path=data, task=Task.embedding, splits=DatasetSplits())
    auto, metrics = _auto_int8(model, access, work / "auto")
    paths = {"fp32": model, "auto-int8": auto,
             "ort quantize_dynamic per_channel": _anchor(model, work / "ort.onnx")}
    feed = causal_lm_inputs(samples, seq, vocab, seed=11)
    ref = ort.InferenceSession(str(model)).run(None, feed)[0]
    fidelity = {}
    for name, path in paths.items():
        out = ort.InferenceSession(str(path)).run(None, feed)[0]
        cosine = cosines(out, ref, feed["attention_mask"])
        fidelity[name] = {"cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
                          "top1_agreement": float((out.argmax(-1) == ref.argmax(-1))[
                              feed["attention_mask"] == 1].mean() * 100)}
    one = {k: v[:1] for k, v in feed.items()}
    latency = _latency_ms(paths, one, seconds)
    family = f"gpt2-causal-lm {config['layers']}x{config['hidden']} seq {seq}"
    return _rows(family, paths, fidelity, latency,
                 {"strategy": metrics["strategy"], "op_counts": metrics["op_counts"]},
                 {name: [1, seq] for name in feed})


def bench_cnn(work: Path, epochs: int, seconds: float) -> list[dict[str, Any]]:
    import onnxruntime as ort

    from tinymlaas.demo import train_digits_cnn
    from tinymlaas.domain import ArtifactKind, DatasetSplits
    from tinymlaas.formats.datasets import load_builtin, write_canonical
    from tinymlaas.transformers.base import DatasetAccess, StepContext
    from tinymlaas.transformers.torch.export_onnx import ExportOnnx, ExportParams

    torch_path, _ = train_digits_cnn(work / "digits.pt2", epochs=epochs)
    export_dir = work / "export"
    export_dir.mkdir()
    model = ExportOnnx().run(StepContext(input_path=torch_path,
                                         input_kind=ArtifactKind.torch_exported,
                                         params=ExportParams(), out_dir=export_dir,
                                         work_dir=export_dir)).path
    digits = load_builtin("digits")
    data = write_canonical(digits, work / "digits.npz")
    access = DatasetAccess(path=data, task=digits.task, splits=DatasetSplits(), num_classes=10)
    auto, metrics = _auto_int8(model, access, work / "auto")
    paths = {"fp32": model, "auto-int8": auto,
             "ort quantize_dynamic per_channel": _anchor(model, work / "ort.onnx")}
    X, y = access.split("test")
    name = ort.InferenceSession(str(model)).get_inputs()[0].name
    X = X.astype(np.float32)
    ref = ort.InferenceSession(str(model)).run(None, {name: X})[0].argmax(1)
    fidelity = {}
    for method, path in paths.items():
        pred = ort.InferenceSession(str(path)).run(None, {name: X})[0].argmax(1)
        fidelity[method] = {"accuracy": float((pred == y).mean() * 100),
                            "top1_agreement": float((pred == ref).mean() * 100)}
    latency = _latency_ms(paths, {name: X[:1]}, seconds)
    return _rows("digits-cnn", paths, fidelity, latency,
                 {"strategy": metrics["strategy"], "op_counts": metrics["op_counts"]})


def _sentences(count: int, seed: int) -> list[str]:
    """Plain English sentences of varied length, some of them two sentences long."""
    rng = np.random.default_rng(seed)
    subjects = ("The engineer", "A small sensor", "My neighbour", "The new firmware", "Our team",
                "The weather station", "A hungry cat", "The delivery drone", "This model",
                "The old bridge", "A student", "The factory robot")
    verbs = ("measured", "reported", "ignored", "repaired", "predicted", "described",
             "watched", "compressed", "updated", "painted", "counted", "shipped")
    objects = ("the temperature at dawn", "a strange vibration in the motor",
               "three red apples", "the latest software release", "every package before noon",
               "the river after the storm", "a quiet song on the radio",
               "the accuracy of the network", "the broken window", "a long list of numbers",
               "the battery level", "the noise in the hallway")
    tails = ("", " yesterday", " with great care", " before anyone noticed",
             " for the second time this week", " and then went home", " while it was raining")

    def one() -> str:
        return (f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}"
                f"{rng.choice(tails)}.")

    return [one() + (f" {one()}" if i % 3 == 0 else "") for i in range(count)]


def bench_hf_folder(work: Path, folder: Path, samples: int, seq: int, seconds: float
                    ) -> list[dict[str, Any]]:
    """A trained Hugging Face model as ``models add DIR`` imports it, on generated text."""
    import onnxruntime as ort

    from hf_models import write_canonical_tokens
    from tinymlaas.domain import DatasetSplits, Task
    from tinymlaas.evaluation.evaluate import cosines
    from tinymlaas.formats.huggingface import export_model_folder, model_tokenizer
    from tinymlaas.transformers.base import DatasetAccess

    exported = export_model_folder(folder, work / "model.onnx", source=folder.name,
                                   max_bytes=4 * 1024**3)
    model = exported.path
    tokenizer = model_tokenizer(model)

    def tokens(texts: list[str]) -> dict[str, np.ndarray]:
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=seq,
                            return_tensors="np")
        return {name: encoded[name].astype(np.int64) for name in exported.inputs}

    data = write_canonical_tokens(work / "tokens.npz", tokens(_sentences(256, seed=3)))
    access = DatasetAccess(path=data, task=Task.embedding, splits=DatasetSplits())
    auto, metrics = _auto_int8(model, access, work / "auto")
    paths = {"fp32": model, "auto-int8": auto,
             "ort quantize_dynamic per_channel": _anchor(model, work / "ort.onnx")}
    feed = tokens(_sentences(samples, seed=11))  # never seen by calibration
    ref = ort.InferenceSession(str(model)).run(None, feed)[0]
    fidelity = {}
    for name, path in paths.items():
        out = ort.InferenceSession(str(path)).run(None, feed)[0]
        cosine = cosines(out, ref, feed.get("attention_mask"))
        fidelity[name] = {"cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean())}
    one = {k: v[:1] for k, v in feed.items()}
    latency = _latency_ms(paths, one, seconds)
    extra = {"strategy": metrics["strategy"], "op_counts": metrics["op_counts"],
             "smooth_alpha": metrics.get("smooth_alpha"),
             "calibration_cosine": metrics.get("calibration_cosine")}
    return _rows(f"{folder.name} ({exported.architecture}) seq {seq}", paths, fidelity,
                 latency, extra, {name: [1, seq] for name in feed})


def _cpu_flags() -> list[str]:
    """The CPU's int8 dot-product extensions (what int8 speed depends on)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                            "amx_int8"})


def _fidelity(row: dict[str, Any]) -> str:
    if "cosine_mean" in row:
        agreement = (f" agree {row['top1_agreement']:.1f}%" if "top1_agreement" in row
                     else "")
        return f"cos mean {row['cosine_mean']:.4f} min {row['cosine_min']:.4f}{agreement}"
    return f"acc {row['accuracy']:.2f}% agree {row['top1_agreement']:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true",
                        help="tiny models and short timings (a smoke run)")
    parser.add_argument("--hf-folder", type=Path, default=None,
                        help="also measure this Hugging Face model folder (trained weights)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "models.json"))
    args = parser.parse_args()
    os.environ.setdefault("TINYMLAAS_HOME", tempfile.mkdtemp(prefix="tinymlaas-bench-"))
    from rich.console import Console
    from rich.table import Table

    work = Path(tempfile.mkdtemp(prefix="tinymlaas-models-"))
    seconds = 0.5 if args.small else 5.0
    (work / "bert").mkdir()
    (work / "cnn").mkdir()
    rows = bench_bert(work / "bert", "small" if args.small else "full",
                      samples=16 if args.small else 200, seq=32 if args.small else 128,
                      seconds=seconds)
    (work / "vit").mkdir()
    rows += bench_vit(work / "vit", "small" if args.small else "full",
                      samples=16 if args.small else 200, seconds=seconds)
    (work / "gpt").mkdir()
    rows += bench_gpt(work / "gpt", "small" if args.small else "full",
                      samples=16 if args.small else 100, seq=32 if args.small else 128,
                      seconds=seconds)
    rows += bench_cnn(work / "cnn", epochs=1 if args.small else 15, seconds=seconds)
    if args.hf_folder is not None:
        (work / "hf").mkdir()
        rows += bench_hf_folder(work / "hf", args.hf_folder, samples=16 if args.small else 200,
                                seq=32 if args.small else 128, seconds=seconds)

    table = Table(title="Default int8 by model family (ONNX Runtime, batch 1, 1 thread)")
    for column in ("family", "method", "fidelity", "size", "size x", "ms", "speed x",
                   "parameters", "MACs"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["family"], row["method"] + (f" ({row['strategy']})"
                                                      if "strategy" in row else ""),
                      _fidelity(row), f"{row['file_bytes'] / 2**20:.2f} MiB",
                      f"{row['size_x']:.2f}", f"{row['latency_ms']:.2f}",
                      f"{row['speed_x']:.2f}", f"{row['parameters']:,}", f"{row['macs']:,}")
    Console(width=200).print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"generated": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "machine": {"platform": platform.platform(),
                                           "processor": platform.processor(),
                                           "cpus": os.cpu_count(),
                                           "cpu_flags": _cpu_flags()},
                               "small": args.small, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
