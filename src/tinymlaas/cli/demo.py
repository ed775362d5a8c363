"""``tinymlaas demo``: from nothing to a comparison table in about a minute.

Trains the demo CNN on scikit-learn's digits (:mod:`tinymlaas.demo`), registers it with
the digits dataset, runs the baseline and four compression pipelines with live progress
and prints the comparison.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tinymlaas.cli.main import compare, run_labels, show_run_summary
from tinymlaas.cli.render import RunProgress, console
from tinymlaas.demo import DEMO_PIPELINES, train_digits_cnn
from tinymlaas.errors import ConflictError
from tinymlaas.service import Services
from tinymlaas.service.pipelines import load_pipeline
from tinymlaas.templates import template_path

__all__ = ["DEMO_PIPELINES", "run_demo"]


def run_demo(epochs: int = 15) -> list[str]:
    """Run the whole demo; returns the run ids (baseline first)."""
    started = time.monotonic()
    svc = Services()
    console.rule("tinymlaas demo")
    console.print(f"data directory: {svc.settings.home}")
    with tempfile.TemporaryDirectory() as tmp:
        console.print(f"training a CNN on digits ({epochs} epochs)...")
        path, accuracy = train_digits_cnn(Path(tmp) / "digits-cnn.pt2", epochs=epochs)
        console.print(f"  trained: {accuracy:.2f}% test accuracy "
                      f"({time.monotonic() - started:.1f} s)")
        try:
            model = svc.add_model(path, "digits-cnn", project="demo",
                                  description="Demo CNN trained on scikit-learn digits")
        except ConflictError:
            model = svc.get_model("digits-cnn", project="demo")
            console.print("  model digits-cnn already registered; reusing it")
    console.print(f"model [bold]{model.name}[/]: {model.parameters:,} parameters")
    try:
        dataset = svc.add_dataset("digits", project="demo")
    except ConflictError:
        dataset = svc.get_dataset("digits", project="demo")
    run_ids = []
    for name in DEMO_PIPELINES:
        pipeline = load_pipeline(template_path(name))
        run = svc.create_run(pipeline, model=model.id, dataset=dataset.id, project="demo")
        console.print(f"\n[bold]{name}[/]: " + " → ".join(s.transformer for s in run.steps))
        with RunProgress(run_labels(run)) as progress:
            run = svc.execute_run(run.id, progress)
        if run.status != "succeeded":
            show_run_summary(run)
            raise SystemExit(6)
        run_ids.append(run.id)
    console.print()
    compare(run_ids, reference=run_ids[0], as_json=False)
    console.print(f"\ndone in {time.monotonic() - started:.0f} s. Next: `tinymlaas runs list`, "
                  f"`tinymlaas export {run_ids[3]} --out ./static-int8`")
    return run_ids
