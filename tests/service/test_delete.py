"""Deleting runs, models, datasets and projects, and the reference-safe collection of the
artifacts they leave: shared artifacts stay, unique ones are freed, active runs are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain import Pipeline, RunStatus
from tinymlaas.errors import ConflictError, NotFoundError

FUSE_Q = Pipeline.model_validate({"name": "q", "steps": ["fuse", {"quantize-dynamic": {}}]})


def _blob(services, sha: str) -> Path:
    return services.artifacts.root / sha[:2] / sha


def _run(services, model, dataset, name: str):
    run = services.create_run(FUSE_Q.model_copy(update={"name": name}), model=model.id,
                              dataset=dataset.id)
    done = services.execute_run(run.id)
    assert done.status is RunStatus.succeeded, done.error
    return done


@pytest.fixture
def world(services, tmp_path: Path):
    model = services.add_model(write_digits_onnx(tmp_path / "logreg.onnx"), "logreg")
    dataset = services.add_dataset("digits")
    return model, dataset


def test_a_shared_artifact_stays_until_its_last_run_goes(services, world,
                                                         tmp_path: Path) -> None:
    model, dataset = world
    first, second = _run(services, *world, "a"), _run(services, *world, "b")
    made = {s.output_sha for s in first.steps}
    assert made == {s.output_sha for s in second.steps}  # the second came from the cache
    assert all(_blob(services, sha).is_file() for sha in made)

    kept = services.delete_run(first.id)
    assert kept.runs == [first.id] and kept.freed_artifacts == 0
    assert all(_blob(services, sha).is_file() for sha in made)
    with pytest.raises(NotFoundError):
        services.get_run(first.id)
    # what the survivor shows still works: its lineage and its export
    assert [a["sha256"] for a in services.lineage(second)] == [
        second.steps[1].output_sha, second.steps[0].output_sha, model.artifact_sha]
    assert (tmp_path / "export" / "model.onnx") in services.export_run(second.id,
                                                                        tmp_path / "export")

    freed = services.delete_run(second.id)
    assert freed.freed_artifacts >= len(made) and freed.freed_bytes > 0
    assert not any(_blob(services, sha).exists() for sha in made)
    assert _blob(services, model.artifact_sha).is_file()  # the model still uses its blob
    assert _blob(services, dataset.artifact_sha).is_file()
    # the cache forgot the freed outputs: the same pipeline runs again for real
    again = _run(services, *world, "c")
    assert [s.status.value for s in again.steps] == ["succeeded", "succeeded"]
    assert all(_blob(services, s.output_sha).is_file() for s in again.steps)


def test_a_model_in_use_is_kept_unless_forced(services, world) -> None:
    model, dataset = world
    run = _run(services, *world, "a")
    with pytest.raises(ConflictError, match="used by 1 run") as refused:
        services.delete_model(model.id)
    assert refused.value.details == {"runs": [run.id]}
    assert services.get_model(model.id).id == model.id  # nothing was deleted

    deleted = services.delete_model(model.id, force=True)
    assert deleted.runs == [run.id] and deleted.models == [model.id]
    assert not _blob(services, model.artifact_sha).exists()
    assert services.list_runs() == [] and services.list_models() == []
    # the dataset is not used any more: it goes without force
    assert services.delete_dataset(dataset.id).datasets == [dataset.id]
    assert not _blob(services, dataset.artifact_sha).exists()
    assert list(services.artifacts.root.glob("??/*")) == []


def test_a_queued_run_is_not_deleted_and_collects_nothing(services, world) -> None:
    model, dataset = world
    done = _run(services, *world, "a")
    services.delete_run(done.id)  # nothing left refers to its outputs, but...
    queued = services.create_run(FUSE_Q, model=model.id, dataset=dataset.id)
    with pytest.raises(ConflictError, match="cancel it"):
        services.delete_run(queued.id)
    assert services.get_run(queued.id).status is RunStatus.pending
    # nothing is collected while a run may be about to record what it made
    assert services.collect_garbage().freed_artifacts == 0
    services.cancel_run(queued.id)
    assert services.delete_run(queued.id).runs == [queued.id]


def test_deleting_a_project_takes_everything_in_it(services, tmp_path: Path) -> None:
    services.meta.ensure_project("lab", "Lab")
    model = services.add_model(write_digits_onnx(tmp_path / "m.onnx"), "m", project="lab")
    dataset = services.add_dataset("digits", project="lab")
    run = services.create_run(FUSE_Q, model=model.id, dataset=dataset.id, project="lab")
    services.execute_run(run.id)
    key = services.signing_key("lab")
    key_dir = services.settings.home / "keys" / "lab"
    assert key.fingerprint and key_dir.is_dir()

    deleted = services.delete_project("lab")
    assert deleted.runs == [run.id] and deleted.models == [model.id]
    assert deleted.datasets == [dataset.id] and deleted.freed_artifacts >= 3
    assert "lab" not in {p.id for p in services.meta.list_projects()}
    assert not key_dir.exists()
    with pytest.raises(ConflictError, match="default project"):
        services.delete_project("default")
