"""The engine and its executor exchange typed messages only: artifacts cross as content
addresses, no path of the server's disk does, and every output a result names is stored."""

from __future__ import annotations

import json

from tinymlaas.contracts.jobs import EvaluateJob, JobResult, ProgressEvent, TransformJob
from tinymlaas.domain import Pipeline, RunStatus
from tinymlaas.executors.base import Executor, JobHandle, ProgressCallback


class Recording(Executor):
    """Hands every job to the real executor and keeps what crossed the boundary."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.jobs: list[TransformJob | EvaluateJob] = []
        self.results: list[JobResult] = []
        self.events: list[ProgressEvent] = []

    def submit(self, job: TransformJob | EvaluateJob) -> JobHandle:
        self.jobs.append(job)
        return self.inner.submit(job)

    def status(self, handle: JobHandle):
        return self.inner.status(handle)

    def wait(self, handle: JobHandle, on_progress: ProgressCallback | None = None) -> JobResult:
        def seen(event: ProgressEvent) -> None:
            self.events.append(event)
            if on_progress is not None:
                on_progress(event)

        result = self.inner.wait(handle, seen)
        self.results.append(result)
        return result

    def cancel(self, handle: JobHandle) -> None:
        self.inner.cancel(handle)


def test_jobs_carry_content_addresses_and_no_server_paths(services, digits_onnx) -> None:
    model = services.add_model(digits_onnx, "digits-onnx")
    dataset = services.add_dataset("digits")
    recording = Recording(services.executor)
    services.engine.executor = recording
    pipeline = Pipeline.model_validate({"steps": ["fuse", {"quantize-dynamic": {}}]})
    run = services.execute_run(services.create_run(pipeline, model=model.id,
                                                   dataset=dataset.id).id)
    assert run.status is RunStatus.succeeded, run.error

    kinds = [type(job).__name__ for job in recording.jobs]
    assert kinds.count("TransformJob") == 2 and kinds.count("EvaluateJob") == 2
    home = str(services.settings.home)
    for job in recording.jobs:
        text = json.dumps(job.model_dump(mode="json"))
        assert home not in text and "/tmp" not in text, text
        assert type(job).model_validate_json(job.model_dump_json()) == job  # round trip
    first, second = recording.jobs[0], recording.jobs[1]
    assert isinstance(first, TransformJob) and isinstance(second, TransformJob)
    assert first.input.sha256 == model.artifact_sha and first.project == run.project
    assert second.input.sha256 == recording.results[0].output.sha256  # chained by content
    evaluation = recording.jobs[3]
    assert isinstance(evaluation, EvaluateJob) and evaluation.reference is not None

    for result in recording.results:
        assert result.ok and result.output is not None
        stored = services.artifacts.path(result.output.sha256)
        assert stored.stat().st_size == result.output.size
    assert run.output_sha == recording.results[1].output.sha256
    assert any(event.fraction > 0 for event in recording.events)
    assert not list((services.settings.home / "work").glob("*")), "job directories removed"
