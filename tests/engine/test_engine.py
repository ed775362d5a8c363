"""The engine with real worker processes: caching, resume, failures, concurrency."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from helpers import step_python
from tinymlaas.domain import Pipeline, RunStatus, StepStatus
from tinymlaas.engine import step_key
from tinymlaas.errors import ConflictError, IncompatibleChainError, InvalidInputError


def pipeline(*steps, name: str = "p") -> Pipeline:
    return Pipeline.model_validate({"name": name, "steps": list(steps)})


def run(services, registered, *steps, **kw):
    model, dataset = registered
    created = services.create_run(pipeline(*steps), model=model.id, dataset=dataset.id, **kw)
    events = []
    return services.execute_run(created.id, events.append), events


def test_a_pipeline_runs_and_records_everything(services, registered) -> None:
    result, events = run(services, registered, "export-onnx", "fuse",
                         {"quantize-static": {"num_samples": 64}})
    assert result.status is RunStatus.succeeded, result.error
    assert [s.status for s in result.steps] == [StepStatus.succeeded] * 3
    for step in result.steps:
        assert step.key and step.output_sha and step.duration_s and step.duration_s > 0
        assert step.started_at and step.finished_at and step.started_at <= step.finished_at
    assert "calibrating on 64 samples" in result.steps[2].log
    assert result.steps[2].metrics["calibration_samples"] == 64
    # lineage: each output's parent is the previous step's output
    shas = [registered[0].artifact_sha] + [s.output_sha for s in result.steps]
    for parent, child in itertools.pairwise(shas):
        assert services.meta.get_artifact(child).parents == [parent]
    assert result.output_sha == shas[-1]
    # evaluation of input and output, the output against the input's outputs
    assert result.baseline["accuracy"] > 95 and result.result["accuracy"] > 94
    assert result.result["top1_agreement"] > 97
    assert result.baseline["file_bytes"] / result.result["file_bytes"] > 3.5
    assert {e.stage for e in events} >= {0, 1, 2, "evaluate-baseline", "evaluate", "run"}
    assert any(e.status == "running" and 0 < e.progress < 1 for e in events)


def test_rerun_is_served_from_the_cache(services, registered) -> None:
    first, _ = run(services, registered, "export-onnx", "quantize-dynamic")
    second, events = run(services, registered, "export-onnx", "quantize-dynamic")
    assert [s.status for s in second.steps] == [StepStatus.cached] * 2
    assert [s.output_sha for s in second.steps] == [s.output_sha for s in first.steps]
    assert second.result == first.result
    assert all(e.status in {"cached", "succeeded"} for e in events)


def test_step_keys_depend_on_everything_that_matters() -> None:
    base = step_key("a" * 64, "fuse", "1", {"x": 1, "y": 2}, None, "p")
    assert base == step_key("a" * 64, "fuse", "1", {"y": 2, "x": 1}, None, "p")  # canonical
    assert len({base, step_key("b" * 64, "fuse", "1", {"x": 1, "y": 2}, None, "p"),
                step_key("a" * 64, "fuse", "2", {"x": 1, "y": 2}, None, "p"),
                step_key("a" * 64, "fuse", "1", {"x": 2, "y": 2}, None, "p"),
                step_key("a" * 64, "fuse", "1", {"x": 1, "y": 2}, "d" * 64, "p"),
                step_key("a" * 64, "fuse", "1", {"x": 1, "y": 2}, None, "q")}) == 6


def test_a_failing_step_keeps_earlier_results_and_resumes(services, registered) -> None:
    fail = {"external": {"command": [step_python(), "-c",
                                     "import sys; sys.exit('calibration tool broke')"]}}
    failed, _ = run(services, registered, "export-onnx", "fuse", fail, "fp16")
    assert failed.status is RunStatus.failed
    assert [s.status for s in failed.steps] == [StepStatus.succeeded, StepStatus.succeeded,
                                                StepStatus.failed, StepStatus.skipped]
    assert "step 3 (external) failed" in failed.error
    assert "calibration tool broke" in failed.error and "calibration tool broke" in \
        failed.steps[2].error
    assert all(services.artifacts.exists(s.output_sha) for s in failed.steps[:2])
    fixed, _ = run(services, registered, "export-onnx", "fuse", "fp16")
    assert [s.status for s in fixed.steps] == [StepStatus.cached, StepStatus.cached,
                                               StepStatus.succeeded]
    assert fixed.status is RunStatus.succeeded


@pytest.mark.parametrize(("step", "cause"), [
    ({"transformer": "test-crash"}, "died from SIGSEGV"),
    ({"transformer": "test-hang", "timeout_s": 3}, "timed out after 3 s"),
    ({"transformer": "test-hog", "memory_mb": 1500}, "out of memory"),
])
def test_crash_hang_and_memory_hog_fail_only_their_run(services, registered, step, cause):
    bad, _ = run(services, registered, "export-onnx", step)
    assert bad.status is RunStatus.failed
    assert cause in bad.error and cause in bad.steps[1].error
    assert bad.steps[0].status is StepStatus.succeeded
    good, _ = run(services, registered, "export-onnx", "test-copy")
    assert good.status is RunStatus.succeeded
    assert good.steps[1].metrics["copied_bytes"] > 100_000


def test_files_named_by_params_key_the_cache_by_content(services, registered, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("first")
    step = {"test-copy": {"note_file": str(note)}}
    first, _ = run(services, registered, "export-onnx", step)
    again, _ = run(services, registered, "export-onnx", step)
    note.write_text("second")
    edited, _ = run(services, registered, "export-onnx", step)
    assert [r.steps[1].status for r in (first, again, edited)] == [
        StepStatus.succeeded, StepStatus.cached, StepStatus.succeeded]


def test_several_runs_at_once(services, registered) -> None:
    model, dataset = registered
    ids = [services.create_run(pipeline("export-onnx", t, name=t), model=model.id,
                               dataset=dataset.id).id
           for t in ("quantize-dynamic", "fp16", "fuse")]
    results = services.execute_runs(ids)
    assert [r.status for r in results] == [RunStatus.succeeded] * 3
    assert len({r.output_sha for r in results}) == 3


def test_impossible_chains_are_rejected_before_anything_runs(services, registered) -> None:
    model, dataset = registered
    with pytest.raises(IncompatibleChainError,
                       match=r"step 1 \(fuse\) takes onnx but receives torch-exported "
                             r"\(add export-onnx before it\)"):
        services.create_run(pipeline("fuse"), model=model.id, dataset=dataset.id)
    with pytest.raises(IncompatibleChainError, match=r"step 2 \(export-onnx\) takes"):
        services.create_run(pipeline("export-onnx", "export-onnx"), model=model.id,
                            dataset=dataset.id)
    with pytest.raises(InvalidInputError, match=r"step 2 quantize-static: invalid params: "
                                                r"num_samples"):
        services.create_run(pipeline("export-onnx", {"quantize-static": {"num_samples": -1}}),
                            model=model.id, dataset=dataset.id)
    assert services.list_runs() == []


def test_interrupted_runs_are_failed_and_resumable(services, registered) -> None:
    model, dataset = registered
    created = services.create_run(pipeline("export-onnx"), model=model.id, dataset=dataset.id)
    # Left running without a lease, as a process from before leases leaves it.
    services.meta.update_run(created.id, status=RunStatus.running)
    services.meta.update_step(created.id, 0, status=StepStatus.running)
    assert services.engine.recover_expired() == [created.id]
    stuck = services.get_run(created.id)
    assert stuck.status is RunStatus.failed and "interrupted" in stuck.error
    assert stuck.steps[0].status is StepStatus.failed
    assert services.meta.run_lease(created.id) == (None, None)
    again = services.execute_run(services.rerun(created.id).id)
    assert again.status is RunStatus.succeeded


def test_a_run_leased_by_another_process_is_neither_executed_nor_recovered(
        services, registered) -> None:
    model, dataset = registered
    created = services.create_run(pipeline("export-onnx"), model=model.id, dataset=dataset.id)
    assert services.meta.acquire_lease(created.id, "elsewhere:1:1", 60,
                                       status=RunStatus.running)
    before = services.get_run(created.id)
    with pytest.raises(ConflictError, match="being executed already"):
        services.execute_run(created.id)
    assert services.engine.recover_expired() == []
    assert services.get_run(created.id) == before
    assert services.meta.run_lease(created.id)[0] == "elsewhere:1:1"
    # Its owner stops renewing: once the lease has expired the run is recovered.
    assert services.meta.release_lease(created.id, "elsewhere:1:1")
    assert services.meta.acquire_lease(created.id, "elsewhere:1:1", -1)
    assert services.engine.recover_expired() == [created.id]
    recovered = services.get_run(created.id)
    assert recovered.status is RunStatus.failed and "interrupted" in recovered.error
    assert services.meta.run_lease(created.id) == (None, None)


def test_an_executing_run_holds_a_lease_that_its_heartbeat_renews(services, registered) -> None:
    model, dataset = registered
    services.engine.lease_ttl_s = 1.2  # renewed every 0.4 s; the step sleeps 2.5 s
    slow = {"external": {"command": [
        step_python(), "-c", "import shutil, sys, time; time.sleep(2.5); "
        "shutil.copy(sys.argv[1] + '/model.onnx', sys.argv[2])", "{in}", "{out}"]}}
    created = services.create_run(pipeline("export-onnx", slow), model=model.id,
                                  dataset=dataset.id)
    seen: list[tuple[datetime, str | None, datetime | None]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            owner, expires = services.meta.run_lease(created.id)
            seen.append((datetime.now(UTC), owner, expires))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = services.execute_run(created.id)
    finally:
        done.set()
        watcher.join()
    assert result.status is RunStatus.succeeded, result.error
    held = [(at, expires) for at, owner, expires in seen if owner is not None]
    assert {owner for _, owner, _ in seen} <= {services.engine.owner, None}
    assert held[-1][0] - held[0][0] > timedelta(seconds=2)  # longer than the TTL ...
    assert all(expires is not None and expires > at for at, expires in held)  # ... never lapsed
    assert len({expires for _, expires in held}) >= 4  # renewed again and again
    host, pid, _started = services.engine.owner.rsplit(":", 2)
    assert (host, pid) == (socket.gethostname(), str(os.getpid()))
    assert services.meta.run_lease(created.id) == (None, None)  # released with the outcome
    assert services.meta.expired_running_runs() == []


def test_cancel_stops_a_running_step(services, registered) -> None:
    import threading

    model, dataset = registered
    created = services.create_run(pipeline("export-onnx", {"test-hang": {"seconds": 60}}),
                                  model=model.id, dataset=dataset.id)
    started = threading.Event()

    def on_event(event) -> None:
        if event.stage == 1 and event.status == "running":
            started.set()

    thread = threading.Thread(target=services.execute_run, args=(created.id, on_event))
    thread.start()
    assert started.wait(120)
    services.engine.cancel(created.id)
    thread.join(60)
    result = services.get_run(created.id)
    assert result.status is RunStatus.cancelled
    assert result.steps[1].status is StepStatus.cancelled
