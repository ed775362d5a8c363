"""Job attempts (migration 0010) on SQLite and PostgreSQL: the lease of a step at a site.
One worker holds a job at a time; a duplicate message is refused while the holder's lease
lives; an expired lease is taken over or queued again, a bounded number of times."""

from __future__ import annotations

import hashlib
import time

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from tinymlaas.domain import (
    Artifact,
    ArtifactKind,
    Model,
    Pipeline,
    PipelineStep,
    Run,
    RunStatus,
    StepRecord,
    TensorSpec,
)
from tinymlaas.store import MetadataStore
from tinymlaas.store.attempts import AttemptStore
from tinymlaas.store.cleanup import delete_project, delete_records
from tinymlaas.store.metadata import MIGRATIONS
from tinymlaas.store.tables import Base

JOB = {"type": "transform", "job_id": "run-a-0-abc"}


def _diff(meta: MetadataStore) -> list[object]:
    with meta.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return [entry for entry in diff if "job_attempts" in repr(entry)
            or "'site'" in repr(entry)]


def test_migration_0010_matches_the_models_and_goes_down_and_up(meta: MetadataStore) -> None:
    assert "job_attempts" in sa.inspect(meta.engine).get_table_names()
    assert "site" in {c["name"] for c in sa.inspect(meta.engine).get_columns("runs")}
    assert _diff(meta) == []
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with meta.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0009")
    assert "job_attempts" not in sa.inspect(meta.engine).get_table_names()
    assert "site" not in {c["name"] for c in sa.inspect(meta.engine).get_columns("runs")}
    meta.migrate()
    assert _diff(meta) == []


def test_one_worker_holds_a_job_and_duplicates_are_refused(meta: MetadataStore) -> None:
    attempts = AttemptStore(meta)
    row, send = attempts.queue("run-a-0-abc", "run-a", "site-1", "default", JOB, 3)
    assert send and row.status == "queued" and row.attempt == 0
    # Queued again (a resumed run): the same row, no second message.
    assert attempts.queue("run-a-0-abc", "run-a", "site-1", "default", JOB, 3)[1] is False
    assert attempts.claim("run-a-0-abc", "site-2", "w1", 30) is None  # another site's
    first = attempts.claim("run-a-0-abc", "site-1", "w1", 30)
    assert first is not None and first.attempt == 1 and first.worker_id == "w1"
    assert attempts.claim("run-a-0-abc", "site-1", "w2", 30) is None  # held alive
    assert attempts.renew("run-a-0-abc", "site-1", "w1", 1, 30, 0.5, "half") is True
    assert attempts.renew("run-a-0-abc", "site-1", "w2", 1, 30) is False
    assert attempts.get("run-a-0-abc").progress == 0.5
    assert attempts.finish("run-a-0-abc", "site-1", "w2", 1, {"ok": True}) is False
    assert attempts.finish("run-a-0-abc", "site-1", "w1", 1,
                           {"job_id": "run-a-0-abc", "ok": True}) is True
    done = attempts.get("run-a-0-abc")
    assert done.status == "succeeded" and done.finished
    assert attempts.claim("run-a-0-abc", "site-1", "w2", 30) is None  # ended
    assert attempts.queue("run-a-0-abc", "run-a", "site-1", "default", JOB, 3)[1] is False


def test_an_expired_lease_is_taken_over_then_requeued_and_failed_after_its_attempts(
        meta: MetadataStore) -> None:
    attempts = AttemptStore(meta)
    attempts.queue("run-b-0-abc", "run-b", "site-1", "default", JOB, 2)
    assert attempts.claim("run-b-0-abc", "site-1", "w1", 0.2) is not None
    assert attempts.requeue_expired("run-b-0-abc") is None  # alive
    time.sleep(0.4)
    # A redelivered message takes over an expired attempt directly.
    second = attempts.claim("run-b-0-abc", "site-1", "w2", 0.2)
    assert second is not None and second.attempt == 2
    assert attempts.renew("run-b-0-abc", "site-1", "w1", 1, 30) is False  # the old holder
    time.sleep(0.4)
    assert attempts.claim("run-b-0-abc", "site-1", "w3", 30) is None  # no attempt left
    assert attempts.requeue_expired("run-b-0-abc") == "failed"
    failed = attempts.get("run-b-0-abc")
    assert failed.status == "failed"
    assert "stopped renewing the lease of this step 2 times" in (failed.error or "")
    # A rerun of the run queues the failed job afresh.
    row, send = attempts.queue("run-b-0-abc", "run-b", "site-1", "default", JOB, 2)
    assert send and row.status == "queued" and row.attempt == 0


def test_the_reaper_requeues_an_expired_attempt_while_attempts_are_left(
        meta: MetadataStore) -> None:
    attempts = AttemptStore(meta)
    attempts.queue("run-c-0-abc", "run-c", "site-1", "default", JOB, 3)
    attempts.claim("run-c-0-abc", "site-1", "w1", 0.2)
    time.sleep(0.4)
    assert attempts.requeue_expired("run-c-0-abc") == "requeued"
    row = attempts.get("run-c-0-abc")
    assert row.status == "queued" and row.attempt == 1
    again = attempts.claim("run-c-0-abc", "site-1", "w2", 30)
    assert again is not None and again.attempt == 2
    attempts.cancel("run-c-0-abc")
    assert attempts.get("run-c-0-abc").status == "cancelled"
    assert attempts.renew("run-c-0-abc", "site-1", "w2", 2, 30) is False


def test_the_holder_of_a_requeued_attempt_keeps_it_until_another_worker_claims(
        meta: MetadataStore) -> None:
    """A worker cut off from the server past its lease (a server restart) still reports
    its step while no newer attempt has begun: the step is not run twice."""
    attempts = AttemptStore(meta)
    attempts.queue("run-d-0-abc", "run-d", "site-1", "default", JOB, 3)
    attempts.claim("run-d-0-abc", "site-1", "w1", 0.2)
    time.sleep(0.4)
    assert attempts.requeue_expired("run-d-0-abc") == "requeued"
    assert attempts.renew("run-d-0-abc", "site-1", "w1", 1, 30) is True
    assert attempts.get("run-d-0-abc").status == "running"
    assert attempts.claim("run-d-0-abc", "site-1", "w2", 30) is None  # the new message
    assert attempts.finish("run-d-0-abc", "site-1", "w1", 1,
                           {"job_id": "run-d-0-abc", "ok": True}) is True
    # Once another worker has claimed the requeued job, the old holder's word is void.
    attempts.queue("run-e-0-abc", "run-e", "site-1", "default", JOB, 3)
    attempts.claim("run-e-0-abc", "site-1", "w1", 0.2)
    time.sleep(0.4)
    attempts.requeue_expired("run-e-0-abc")
    assert attempts.claim("run-e-0-abc", "site-1", "w2", 30) is not None
    assert attempts.renew("run-e-0-abc", "site-1", "w1", 1, 30) is False
    assert attempts.finish("run-e-0-abc", "site-1", "w1", 1, {"ok": True}) is False


def _ended_run(meta: MetadataStore, run_id: str, project: str) -> None:
    sha = hashlib.sha256(project.encode()).hexdigest()
    if not _has_model(meta, f"model-{project}"):
        meta.ensure_project(project)
        meta.add_artifact(Artifact(sha256=sha, kind=ArtifactKind.onnx, size_bytes=10,
                                   filename="model.onnx"))
        meta.add_model(Model(id=f"model-{project}", name=f"m-{project}", artifact_sha=sha,
                             kind=ArtifactKind.onnx, parameters=7, project=project,
                             inputs=[TensorSpec(name="x", shape=["N", 4], dtype="float32")]))
    meta.add_run(Run(id=run_id, name="p", model_id=f"model-{project}", project=project,
                     pipeline=Pipeline(name="p", steps=[PipelineStep(transformer="fuse")]),
                     steps=[StepRecord(index=0, transformer="fuse")]))
    meta.update_run(run_id, status=RunStatus.succeeded)


def _has_model(meta: MetadataStore, model_id: str) -> bool:
    with meta.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM models WHERE id = :i"),
                            {"i": model_id}).scalar_one() > 0


def _jobs(meta: MetadataStore) -> list[str]:
    with meta.engine.connect() as conn:
        return sorted(conn.execute(sa.text("SELECT job_id FROM job_attempts")).scalars())


def test_deleting_a_run_or_its_project_deletes_its_jobs_attempts(meta: MetadataStore) -> None:
    attempts = AttemptStore(meta)
    for run_id, project in (("run-a", "plant"), ("run-b", "plant"), ("run-c", "lab")):
        _ended_run(meta, run_id, project)
        for step in range(2):
            job_id = f"{run_id}-{step}-abc"
            attempts.queue(job_id, run_id, "site-1", project, {"job_id": job_id}, 3)
    attempts.claim("run-a-0-abc", "site-1", "w1", 30)
    attempts.finish("run-a-0-abc", "site-1", "w1", 1, {"job_id": "run-a-0-abc", "ok": False})
    delete_records(meta, runs=["run-a"])
    assert _jobs(meta) == ["run-b-0-abc", "run-b-1-abc", "run-c-0-abc", "run-c-1-abc"]
    delete_project(meta, "plant")
    assert _jobs(meta) == ["run-c-0-abc", "run-c-1-abc"]  # another project's stay
    assert [r.id for r in meta.list_runs(project="lab")] == ["run-c"]
