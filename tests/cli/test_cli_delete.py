"""``tinymlaas runs|models|datasets|projects delete``: confirmation, refusals, what is freed."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from tinymlaas.api.testing import write_digits_onnx


def test_delete_asks_first_and_frees_what_it_can(cli, services, tmp_path: Path,
                                                 monkeypatch) -> None:
    code, _, err = cli("models", "add", write_digits_onnx(tmp_path / "m.onnx"), "--name", "m")
    assert code == 0, err
    assert cli("datasets", "add", "digits")[0] == 0
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: fused\nmodel: m\ndataset: digits\nsteps: [fuse]\n")
    code, out, err = cli("run", pipeline, "--json")
    assert code == 0, err
    run_id = json.loads(out)["id"]

    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    code, out, _ = cli("runs", "delete", run_id)
    assert code == 1 and "Delete run" in out
    assert services.get_run(run_id).id == run_id  # answered no: nothing deleted

    code, _, err = cli("models", "delete", "m", "--yes")
    assert code != 0 and "used by 1 run" in err and "force" in err
    code, out, err = cli("models", "delete", "m", "--force", "--yes", "--json")
    assert code == 0, err
    deleted = json.loads(out)
    assert deleted["runs"] == [run_id] and deleted["freed_artifacts"] >= 2
    code, out, _ = cli("datasets", "delete", "digits", "-y")
    assert code == 0 and "deleted dataset; freed 1 artifact(s)" in out
    assert services.list_models() == [] and services.list_datasets() == []

    code, _, err = cli("projects", "delete", "default", "--yes")
    assert code != 0 and "default project cannot be deleted" in err
    code, out, _ = cli("projects", "list")
    assert code == 0 and "default" in out
