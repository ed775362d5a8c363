"""The metadata store, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from tinymlaas.domain import (
    Artifact,
    ArtifactKind,
    Dataset,
    Device,
    Evaluation,
    Model,
    Pipeline,
    PipelineStep,
    Run,
    RunStatus,
    StepRecord,
    StepStatus,
    TensorSpec,
)
from tinymlaas.errors import ConflictError, NotFoundError
from tinymlaas.store import MetadataStore


@pytest.fixture
def store(database_url: str):
    meta = MetadataStore(database_url)
    meta.ensure_project("default")
    yield meta
    meta.close()


def _artifact(store: MetadataStore, sha: str = "a" * 64) -> Artifact:
    return store.add_artifact(Artifact(sha256=sha, kind=ArtifactKind.onnx, size_bytes=10,
                                       filename="model.onnx"))


def _model(store: MetadataStore, name: str = "m", sha: str = "a" * 64) -> Model:
    _artifact(store, sha)
    return store.add_model(Model(id=f"model-{name}", name=name, artifact_sha=sha,
                                 kind=ArtifactKind.onnx, parameters=7,
                                 inputs=[TensorSpec(name="x", shape=["N", 4], dtype="float32")]))


def _dataset(store: MetadataStore) -> Dataset:
    _artifact(store, "b" * 64)
    return store.add_dataset(Dataset(id="data-1", name="d", artifact_sha="b" * 64,
                                     source_format="npz", num_samples=10, feature_shape=[4],
                                     num_classes=2, class_names=["a", "b"]))


def _run(store: MetadataStore, run_id: str = "run-1") -> Run:
    model, dataset = store.get_model("m"), store.get_dataset("d")
    pipeline = Pipeline(name="p", steps=[PipelineStep(transformer="fuse")])
    return store.add_run(Run(id=run_id, name="p", model_id=model.id, dataset_id=dataset.id,
                             pipeline=pipeline,
                             steps=[StepRecord(index=0, transformer="fuse")]))


def test_schema_is_at_the_newest_migration(store: MetadataStore) -> None:
    with store.engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0001" or int(version[:4]) >= 1
    MetadataStore(store.url).close()  # migrating again is a no-op


def test_models_round_trip_by_id_and_name(store: MetadataStore) -> None:
    model = _model(store)
    by_id, by_name = store.get_model(model.id), store.get_model("m")
    assert by_id == by_name
    assert by_id.inputs[0].shape == ["N", 4] and by_id.parameters == 7
    assert by_id.created_at.tzinfo is not None
    assert [m.name for m in store.list_models()] == ["m"]
    assert store.list_models(project="other") == []


def test_duplicate_names_conflict_and_keep_the_first(store: MetadataStore) -> None:
    _model(store)
    with pytest.raises(ConflictError, match="already exists"):
        store.add_model(Model(id="model-2", name="m", artifact_sha="a" * 64,
                              kind=ArtifactKind.onnx))
    assert store.get_model("m").id == "model-m"


def test_unknown_references_are_not_found(store: MetadataStore) -> None:
    with pytest.raises(NotFoundError, match="model 'nope' not found"):
        store.get_model("nope")
    with pytest.raises(NotFoundError):
        store.get_run("nope")
    with pytest.raises(NotFoundError):
        store.get_artifact("f" * 64)


def test_project_scoping_hides_other_projects(store: MetadataStore) -> None:
    _model(store)
    with pytest.raises(NotFoundError):
        store.get_model("m", project="elsewhere")


def test_artifacts_are_recorded_once(store: MetadataStore) -> None:
    first = _artifact(store)
    again = store.add_artifact(Artifact(sha256="a" * 64, kind=ArtifactKind.onnx, size_bytes=10,
                                        filename="other.onnx", parents=["c" * 64]))
    assert again == first


def test_runs_steps_updates_and_filters(store: MetadataStore) -> None:
    _model(store)
    _dataset(store)
    _run(store)
    now = datetime.now(UTC)
    store.update_step("run-1", 0, status=StepStatus.succeeded, output_sha="a" * 64,
                      metrics={"nodes": 3}, log="hello", duration_s=1.5, finished_at=now)
    store.update_run("run-1", status=RunStatus.succeeded, result={"accuracy": 99.0})
    run = store.get_run("run-1")
    assert run.status is RunStatus.succeeded and run.result == {"accuracy": 99.0}
    assert run.steps[0].status is StepStatus.succeeded and run.steps[0].metrics == {"nodes": 3}
    assert run.steps[0].log == "hello" and run.steps[0].duration_s == 1.5
    assert [r.id for r in store.list_runs(status="succeeded")] == ["run-1"]
    assert store.list_runs(status="failed") == []
    assert store.runs_with_status(RunStatus.succeeded) == ["run-1"]


def test_step_cache_and_evaluations(store: MetadataStore) -> None:
    _artifact(store)
    assert store.cached_step("k" * 64) is None
    store.cache_step("k" * 64, "a" * 64, "fuse", {"n": 1})
    store.cache_step("k" * 64, "a" * 64, "fuse", {"n": 1})  # idempotent
    assert store.cached_step("k" * 64) == ("a" * 64, {"n": 1})
    evaluation = Evaluation(artifact_sha="a" * 64, dataset_id="d", metrics={"accuracy": 1.0})
    store.add_evaluation("e" * 64, evaluation)
    got = store.get_evaluation("e" * 64)
    assert got is not None and got.metrics == {"accuracy": 1.0}


def test_custom_devices_belong_to_a_project(store: MetadataStore) -> None:
    device = Device(name="my-board", arch="cortex-m4", clock_mhz=80, ram_kb=128, flash_kb=512)
    stored = store.add_device(device)
    assert stored.project == "default" and stored.custom
    other = store.add_device(device.model_copy(update={"project": "p2", "ram_kb": 64}))
    assert store.list_custom_devices() == [stored, other]
    assert store.list_custom_devices({"p2"}) == [other]
    assert store.list_custom_devices({"nobody"}) == []
    with pytest.raises(ConflictError, match="in project 'default'"):
        store.add_device(device)


def test_upgrading_moves_existing_devices_into_the_default_project(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from tinymlaas.store.metadata import MIGRATIONS, _create_engine

    engine = _create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.execute(sa.text("INSERT INTO devices (name, spec) VALUES (:n, :s)"),
                           {"n": "old-board", "s": '{"name": "old-board", "arch": "cortex-m4", '
                            '"clock_mhz": 64, "ram_kb": 256, "flash_kb": 1024}'})
    engine.dispose()
    store = MetadataStore(database_url)
    try:
        [device] = store.list_custom_devices()
        assert (device.name, device.project, device.custom) == ("old-board", "default", True)
    finally:
        store.close()


def test_concurrent_writers_do_not_fail(store: MetadataStore) -> None:
    _model(store)
    _dataset(store)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            _run(store, f"run-{i}")
            for _ in range(5):
                store.update_run(f"run-{i}", status=RunStatus.running)
                store.update_step(f"run-{i}", 0, progress=0.5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_runs()) == 16


def _terminate_connections(database_url: str) -> int:
    """End every server process connected to the database (as a restart would)."""
    name = database_url.rsplit("/", 1)[1]
    admin = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name}).all())
    finally:
        admin.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_pooled_connections_the_database_closed_are_replaced_after_an_idle_while(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinymlaas.store import metadata

    store = MetadataStore(database_url)
    try:
        store.ensure_project("default")
        _model(store)
        # Used moments ago: taken without a check, so a connection closed since fails once.
        monkeypatch.setattr(metadata, "PING_AFTER_IDLE_S", 3600.0)
        assert _terminate_connections(database_url) >= 1
        with pytest.raises(sa.exc.OperationalError):
            store.get_model("m")
        # Idle past the limit: checked first, and replaced when the database closed it.
        assert store.get_model("m").name == "m"
        monkeypatch.setattr(metadata, "PING_AFTER_IDLE_S", 0.0)
        assert _terminate_connections(database_url) >= 1
        assert store.get_model("m").name == "m"
        with store.read_connection() as c:
            assert c.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        store.close()
