"""Several runs at once from separate CLI processes sharing one SQLite home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_two_cli_processes_run_pipelines_at_once(ready, settings, tmp_path: Path) -> None:
    files = []
    for name, step in (("dyn", "quantize-dynamic"), ("half", "fp16")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\nmodel: digits-cnn\ndataset: digits\n"
                        f"steps: [export-onnx, {step}]\n")
        files.append(path)
    env = {**os.environ, "TINYMLAAS_HOME": str(settings.home)}
    procs = [subprocess.Popen([sys.executable, "-m", "tinymlaas.cli.main", "run", str(f)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for f in files]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "database is locked" not in out + err
    runs = json.loads(ready("runs", "list", "--json")[1])
    assert sorted(r["name"] for r in runs) == ["dyn", "half"]
    assert all(r["status"] == "succeeded" for r in runs)
