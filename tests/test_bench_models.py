"""``bench/models.py`` runs end to end on tiny models and writes figures that hold together:
auto-int8 picks dynamic for the encoder and the ViT and static for the CNN, stays close to
fp32, makes the files smaller, and leaves parameter counts and MACs as they were."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_models_bench_runs_on_tiny_models(tmp_path: Path) -> None:
    from hf_folders import write_bert_folder

    out = tmp_path / "models.json"
    folder = write_bert_folder(tmp_path / "my-bert")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "models.py"), "--small",
                           "--hf-folder", str(folder), "--out", str(out)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    by = {(r["family"].split()[0], r["method"]): r for r in rows}
    assert {m for _, m in by} == {"fp32", "auto-int8", "ort quantize_dynamic per_channel",
                                  "auto-int8 strategy=static"}
    bert, cnn = by[("bert-embedder", "auto-int8")], by[("digits-cnn", "auto-int8")]
    vit = by[("vit-classifier", "auto-int8")]
    assert bert["strategy"] == "dynamic" and vit["strategy"] == "dynamic"
    assert cnn["strategy"] == "static"
    assert bert["cosine_mean"] >= 0.99 and bert["cosine_min"] >= 0.95
    assert vit["cosine_mean"] >= 0.99 and vit["top1_agreement"] >= 80.0
    assert cnn["top1_agreement"] >= 95.0
    gpt = by[("gpt2-causal-lm", "auto-int8")]
    assert gpt["strategy"] == "dynamic" and gpt["cosine_mean"] >= 0.99
    assert gpt["parameters"] == by[("gpt2-causal-lm", "fp32")]["parameters"]
    assert gpt["size_x"] >= 2.5
    for family in ("bert-embedder", "vit-classifier", "digits-cnn"):
        fp32 = by[(family, "fp32")]
        for method in ("auto-int8", "ort quantize_dynamic per_channel"):
            row = by[(family, method)]
            assert row["size_x"] >= 2.5, (family, method)
            assert row["parameters"] == fp32["parameters"], (family, method)
            assert row["macs"] == fp32["macs"], (family, method)
    # a Hugging Face folder of the user's own, imported as `models add DIR` does
    mine = by[("my-bert", "auto-int8")]
    assert mine["strategy"] == "dynamic" and mine["cosine_mean"] >= 0.99
    assert set(mine["calibration_cosine"]) == {"0", "0.6", "0.8"}
    assert mine["parameters"] == by[("my-bert", "fp32")]["parameters"]
    assert "Default int8 by model family" in proc.stdout
