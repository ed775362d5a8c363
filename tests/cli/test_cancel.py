"""``tinymlaas runs cancel`` on the local stores: a run is executed by the process that
started it, so only a run that no live process executes is marked cancelled here."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain import RunStatus, StepStatus
from tinymlaas.service.pipelines import load_pipeline


@pytest.fixture
def pending(services, tmp_path: Path):
    """A created, never executed run of two steps."""
    model = services.add_model(write_digits_onnx(tmp_path / "digits.onnx"), "logreg")
    dataset = services.add_dataset("digits")
    pipeline = tmp_path / "two.yaml"
    pipeline.write_text("name: two\nsteps:\n  - fuse\n  - quantize-dynamic\n")
    run = services.create_run(load_pipeline(pipeline), model=model.id, dataset=dataset.id)
    assert run.status is RunStatus.pending
    return run


def test_cancel_a_pending_run(cli, services, pending) -> None:
    code, out, err = cli("runs", "cancel", pending.id)
    assert code == 0, err
    assert f"({pending.id}): cancelled" in out
    run = services.get_run(pending.id)
    assert run.status is RunStatus.cancelled and run.error == "cancelled"
    assert run.finished_at is not None
    assert [s.status for s in run.steps] == [StepStatus.cancelled, StepStatus.skipped]
    assert services.meta.run_lease(pending.id) == (None, None)

    # A finished run cannot be cancelled: one line, exit 4 (conflict).
    code, out, err = cli("runs", "cancel", pending.id)
    assert code == 4
    assert "is cancelled; only a queued or running run can be cancelled" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli("runs", "cancel", "run_nope")
    assert code == 3 and "not found" in err


def test_cancel_as_json(cli, pending) -> None:
    code, out, err = cli("runs", "cancel", "two", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["id"] == pending.id and body["status"] == "cancelled"


def test_a_run_another_process_executes_is_left_to_it(cli, services, pending) -> None:
    owner = "elsewhere:4242:1"
    assert services.meta.acquire_lease(pending.id, owner, 600, status=RunStatus.running)
    code, _, err = cli("runs", "cancel", pending.id)
    assert code == 4
    assert "being executed by another process (elsewhere:4242:1)" in err
    assert f"runs cancel {pending.id}" in err
    run = services.get_run(pending.id)
    assert run.status is RunStatus.running
    assert services.meta.run_lease(pending.id)[0] == owner


def test_a_run_whose_process_stopped_is_cancelled(cli, services, pending) -> None:
    assert services.meta.acquire_lease(pending.id, "gone:1:1", 1.5, status=RunStatus.running)
    services.meta.update_step(pending.id, 0, status=StepStatus.running)
    time.sleep(1.6)  # the lease expires: its owner stopped renewing it
    code, out, err = cli("runs", "cancel", pending.id)
    assert code == 0, err
    assert "cancelled" in out
    run = services.get_run(pending.id)
    assert run.status is RunStatus.cancelled
    assert [s.status for s in run.steps] == [StepStatus.cancelled, StepStatus.skipped]
    assert services.meta.run_lease(pending.id) == (None, None)
