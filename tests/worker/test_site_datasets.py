"""Datasets that stay at a site (``site://NAME/path``) against a real server, RabbitMQ and
real ``tinymlaas worker`` processes:

- registered through the CLI as a user would, described by the site's worker; a run on it
  runs at the site and gives the output the same pipeline gives in-process on the same
  file, and no file in the server's home holds the dataset's bytes;
- paths that leave the data root, missing files, another project's site, a run asking
  for a second site and a search are refused with clear errors;
- a file changed at the site after registration fails the step that reads it, naming the
  file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers import step_python
from sites_harness import PASSWORD, QUANTIZE, RABBITMQ, Studio, running_studio
from tinymlaas.client import Client
from tinymlaas.config import Settings
from tinymlaas.errors import ConflictError, InvalidInputError, NotFoundError, UnsafeInputError
from tinymlaas.formats.datasets import load_builtin
from tinymlaas.service import Services
from tinymlaas.service.pipelines import parse_pipeline


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with running_studio(tmp_path_factory.mktemp("site-data"), RABBITMQ, 5672,
                        "RabbitMQ") as studio:
        site = studio.client.create_site("factory")
        studio.start_worker("factory", site.token, log_name="factory")
        studio.factory_token = site.token  # type: ignore[attr-defined]
        yield studio


def _write_npz(path: Path, samples: int = 1500, scale: float = 1.0) -> str:
    """Digits (a part, scaled: not the server's built-in) as an NPZ; returns its sha256."""
    digits = load_builtin("digits")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, X=digits.X[:samples] * scale, y=digits.y[:samples])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(studio: Studio, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYMLAAS_")}
    return subprocess.run([sys.executable, "-m", "tinymlaas.cli.main", "--server", studio.url,
                           "--token", str(studio.client.token), *args],
                          env=env, capture_output=True, text=True, timeout=300)


def _files_with_sha(root: Path, shas: set[str]) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()
            and hashlib.sha256(path.read_bytes()).hexdigest() in shas]


def test_a_dataset_at_a_site_runs_there_and_its_bytes_never_reach_the_server(
        studio: Studio, tmp_path: Path) -> None:
    source_sha = _write_npz(studio.root / "data" / "plant" / "data.npz")
    added = _cli(studio, "datasets", "add", "site://factory/plant/data.npz", "--name", "sd",
                 "--json")
    assert added.returncode == 0, added.stderr
    dataset = json.loads(added.stdout)
    assert dataset["location"] == "site://factory/plant/data.npz"
    assert dataset["site"]["source_sha256"] == source_sha
    assert dataset["site"]["path"] == "plant/data.npz"
    assert (dataset["num_samples"], dataset["feature_shape"], dataset["num_classes"]) == \
        (1500, [1, 8, 8], 10)
    assert "described: 1500 samples" in (studio.root / "factory.log").read_text()

    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(json.dumps(QUANTIZE))
    ran = _cli(studio, "run", str(pipeline), "--model", "m", "--dataset", "sd", "--site",
               "factory", "--json")
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    run = json.loads(ran.stdout)
    assert run["status"] == "succeeded", run.get("error")

    # The same pipeline on the same file, in-process: the same output and accuracy (the
    # canonical arrays, and so the steps' keys, are the same at the site and here).
    local = Services(Settings(home=tmp_path / "local-home"))
    try:
        model = local.add_model(studio.model_path, "m")
        data = local.add_dataset(str(studio.root / "data" / "plant" / "data.npz"), "sd")
        assert data.artifact_sha == dataset["artifact_sha"]
        expected = local.execute_run(local.create_run(
            parse_pipeline(QUANTIZE, "pipeline"), model=model.id, dataset=data.id).id)
    finally:
        local.close()
    assert run["output_sha"] == expected.output_sha
    assert run["result"]["accuracy"] == pytest.approx(expected.result["accuracy"], abs=1e-9)

    # Neither the file nor its canonical arrays are anywhere in the server's home.
    assert _files_with_sha(studio.home, {source_sha, dataset["artifact_sha"]}) == []
    with pytest.raises(ConflictError, match="never reach this server"):
        studio.client.download_dataset("sd", tmp_path / "sd.npz")


def test_site_paths_files_and_sites_that_cannot_be_used_are_refused(
        studio: Studio, tmp_path: Path) -> None:
    client = studio.client
    for bad in ("site://factory/../etc/passwd", "site://factory//data.npz",
                "site://factory/a/./b.npz", "site://factory/", "site://factory\\x.npz"):
        with pytest.raises(InvalidInputError):
            client.add_site_dataset(bad)
    with pytest.raises(NotFoundError, match=r"no file 'missing\.npz'"):
        client.add_site_dataset("site://factory/missing.npz")
    with pytest.raises(NotFoundError):
        client.add_site_dataset("site://nowhere/data.npz")
    # A link under the data root that leads out of it is not followed.
    outside = tmp_path / "outside.npz"
    _write_npz(outside)
    link = studio.root / "data" / "escape.npz"
    link.symlink_to(outside)
    with pytest.raises(InvalidInputError, match="leads outside the site's data root"):
        client.add_site_dataset("site://factory/escape.npz")
    pickled = studio.root / "data" / "data.pkl"
    pickled.write_bytes(b"\x80\x04N.")
    with pytest.raises(UnsafeInputError, match="pickle"):
        client.add_site_dataset("site://factory/data.pkl")

    # A second account cannot use the first one's site, nor read its datasets.
    other = Client(studio.url)
    try:
        other.register("other@example.com", PASSWORD)
        other.login("other@example.com", PASSWORD)
        _write_npz(studio.root / "data" / "mine.npz", samples=600)
        with pytest.raises(NotFoundError):
            other.add_site_dataset("site://factory/mine.npz")
    finally:
        other.close()

    # A run on data of one site cannot run at another; a search cannot read it here.
    _write_npz(studio.root / "data" / "two.npz", samples=900)
    dataset = client.add_site_dataset("site://factory/two.npz", name="two")
    second = client.create_site("annex")
    studio.start_worker("annex", second.token, log_name="annex")
    with pytest.raises(InvalidInputError, match="a run reads one site's data"):
        client.create_run(studio.model.id, dataset.id, pipeline=QUANTIZE, site="annex")
    with pytest.raises(InvalidInputError, match="a search measures candidates on this server"):
        client.search(studio.model.id, dataset.id)


def test_a_worker_busy_with_a_long_step_still_describes_a_dataset(studio: Studio) -> None:
    """Its one step slot is taken: the description comes to it with its heartbeat."""
    site = studio.client.create_site("busy")
    studio.start_worker("busy", site.token, log_name="busy")
    script = ("import shutil, sys, time; time.sleep(60); "
              "shutil.copy(sys.argv[1] + '/model.onnx', sys.argv[2] + '/model.onnx')")
    slow = {"steps": [{"external": {"command": [step_python(), "-c", script, "{in}",
                                                "{out}"]}}], "evaluate": False}
    run = studio.client.create_run(studio.model.id, None, pipeline=slow, site="busy")
    log = studio.root / "busy.log"
    deadline = time.monotonic() + 60
    while " claimed: attempt " not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    _write_npz(studio.root / "data" / "busy.npz", samples=700)
    dataset = studio.client.add_site_dataset("site://busy/busy.npz", name="busy")
    assert dataset.num_samples == 700
    assert studio.client.get_run(run.id).status == "running"  # the step still holds its slot
    studio.client.cancel_run(run.id)
    assert studio.wait_run(run.id).status == "cancelled"


def test_a_file_changed_at_the_site_after_registration_fails_the_step(studio: Studio) -> None:
    path = studio.root / "data" / "drift.npz"
    _write_npz(path, samples=1000)
    dataset = studio.client.add_site_dataset("site://factory/drift.npz", name="drift")
    # A new worker (its own, empty cache) meets a file that changed since.
    studio.stop_workers()
    studio.workers.clear()
    _write_npz(path, samples=1000, scale=0.5)
    studio.start_worker("factory", studio.factory_token,  # type: ignore[attr-defined]
                        log_name="factory-fresh")
    run = studio.client.create_run(studio.model.id, dataset.id, pipeline=QUANTIZE)
    done = studio.wait_run(run.id)
    assert done.status == "failed"
    assert "changed since the dataset was registered" in done.error
    assert "drift.npz" in done.error
