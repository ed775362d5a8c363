"""Run leases: a server sharing its database with other processes (a CLI run, another
server) recovers only the runs of a process that stopped, once their lease has expired,
and two processes never both take the same run. Real processes on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import yaml
from security_support import Server, wait_for

from helpers import step_python
from tinymlaas.artifacts import LocalArtifactStore
from tinymlaas.config import Settings
from tinymlaas.domain import (
    Artifact,
    ArtifactKind,
    Dataset,
    Model,
    Pipeline,
    PipelineStep,
    Run,
    RunStatus,
    StepRecord,
    StepStatus,
)
from tinymlaas.engine import Engine
from tinymlaas.service import Services
from tinymlaas.store import MetadataStore

TTL_S = 3.0

# The slow step: the first call waits until the test creates ``go`` (at most a minute),
# later calls (a resumed run) copy at once. Every call leaves a line in ``calls``.
STEP = """\
import os, shutil, sys, time
gate = sys.argv[3]
with open(os.path.join(gate, "calls"), "a") as calls:
    calls.write("call\\n")
if not os.path.exists(os.path.join(gate, "started")):
    open(os.path.join(gate, "started"), "w").close()
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(gate, "go")) and time.time() < deadline:
        time.sleep(0.05)
shutil.copy(os.path.join(sys.argv[1], "model.onnx"), sys.argv[2])
"""


# store level -----------------------------------------------------------------------------

@pytest.fixture
def store(database_url: str) -> Iterator[MetadataStore]:
    meta = MetadataStore(database_url)
    meta.ensure_project("default")
    sha_model, sha_data = "a" * 64, "b" * 64
    for sha in (sha_model, sha_data):
        meta.add_artifact(Artifact(sha256=sha, kind=ArtifactKind.onnx, size_bytes=1,
                                   filename="x"))
    meta.add_model(Model(id="model-1", name="m", artifact_sha=sha_model,
                         kind=ArtifactKind.onnx))
    meta.add_dataset(Dataset(id="data-1", name="d", artifact_sha=sha_data, source_format="npz",
                             num_samples=10, feature_shape=[4], num_classes=2))
    yield meta
    meta.close()


def _run(meta: MetadataStore, run_id: str) -> str:
    meta.add_run(Run(id=run_id, name="p", model_id="model-1", dataset_id="data-1",
                     pipeline=Pipeline(name="p", steps=[PipelineStep(transformer="fuse")]),
                     steps=[StepRecord(index=0, transformer="fuse")]))
    return run_id


def test_a_lease_is_exclusive_renewed_reported_when_expired_and_released(
        store: MetadataStore) -> None:
    run_id = _run(store, "run-1")
    assert store.acquire_lease(run_id, "a:1:1", TTL_S, status=RunStatus.running)
    owner, first = store.run_lease(run_id)
    assert owner == "a:1:1" and first is not None
    assert store.get_run(run_id).status is RunStatus.running

    # Exclusive: another owner can neither take, renew nor release it.
    assert not store.acquire_lease(run_id, "b:2:2", TTL_S, status=RunStatus.running)
    assert store.renew_leases("b:2:2", [run_id], 3600) == []
    assert not store.release_lease(run_id, "b:2:2", status=RunStatus.failed)
    assert store.run_lease(run_id) == ("a:1:1", first)
    assert store.get_run(run_id).status is RunStatus.running

    # Renewal moves the expiry forward.
    time.sleep(0.05)
    assert store.renew_leases("a:1:1", [run_id, "run-unknown"], TTL_S) == [run_id]
    renewed = store.run_lease(run_id)[1]
    assert renewed is not None and renewed > first

    # Reported as expired only once its expiry has passed.
    assert store.expired_running_runs() == []
    assert store.expired_running_runs(renewed + timedelta(seconds=1)) == [run_id]
    # An expired lease may be taken by another owner (and then not by the first).
    assert store.renew_leases("a:1:1", [run_id], -1) == [run_id]
    assert store.expired_running_runs() == [run_id]
    assert store.acquire_lease(run_id, "b:2:2", TTL_S, status_from={RunStatus.running})
    assert store.expired_running_runs() == []
    assert not store.acquire_lease(run_id, "a:1:1", TTL_S)
    assert store.renew_leases("a:1:1", [run_id], TTL_S) == []

    # Release clears the lease, recording the outcome in the same update.
    assert store.release_lease(run_id, "b:2:2", status=RunStatus.succeeded)
    assert store.run_lease(run_id) == (None, None)
    assert store.get_run(run_id).status is RunStatus.succeeded
    assert not store.release_lease(run_id, "b:2:2")
    # ``status_from`` limits where a lease is taken from.
    assert not store.acquire_lease(run_id, "a:1:1", TTL_S, status_from={RunStatus.running})

    # A running run without any lease (from before leases) counts as expired.
    legacy = _run(store, "run-2")
    store.update_run(legacy, status=RunStatus.running)
    assert store.expired_running_runs() == [legacy]


def test_concurrent_recovery_takes_each_run_once(store: MetadataStore, database_url: str,
                                                  tmp_path: Path) -> None:
    ids = [_run(store, f"run-{i}") for i in range(12)]
    for run_id in ids[:10]:  # executed by a process that died: leases expired
        assert store.acquire_lease(run_id, "dead:1:1", -1, status=RunStatus.running)
    for run_id in ids[10:]:  # executed by a live process
        assert store.acquire_lease(run_id, "alive:2:2", 60, status=RunStatus.running)
    for run_id in ids:
        store.update_step(run_id, 0, status=StepStatus.running)

    # Two recovering processes, each with its own connections.
    stores = [MetadataStore(database_url) for _ in range(2)]
    engines = [Engine(meta, LocalArtifactStore(tmp_path / "blobs"), None,  # type: ignore[arg-type]
                      lease_ttl_s=TTL_S, owner=f"server-{n}:1:1")
               for n, meta in enumerate(stores)]
    barrier = threading.Barrier(2)
    taken: list[list[str]] = [[], []]

    def recover(n: int) -> None:
        barrier.wait()
        taken[n] = engines[n].recover_expired()

    threads = [threading.Thread(target=recover, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for meta in stores:
        meta.close()

    assert sorted(taken[0] + taken[1]) == sorted(ids[:10])  # each expired run exactly once
    assert not set(taken[0]) & set(taken[1])
    for run_id in ids[:10]:
        run = store.get_run(run_id)
        assert run.status is RunStatus.failed and "interrupted" in (run.error or "")
        assert run.steps[0].status is StepStatus.failed
        assert store.run_lease(run_id) == (None, None)
    for run_id in ids[10:]:  # the live process's runs are untouched
        run = store.get_run(run_id)
        assert run.status is RunStatus.running and run.error is None
        assert run.steps[0].status is StepStatus.running
        assert store.run_lease(run_id)[0] == "alive:2:2"


# real processes: a CLI run beside a server ------------------------------------------------

class Setup:
    """A data home and database shared by a CLI run and a server, with the digits model
    and dataset registered and a pipeline whose second step waits at a gate."""

    def __init__(self, home: Path, database_url: str, tiny_onnx: Path) -> None:
        self.home, self.database_url = home, database_url
        # Files the step writes: world-writable, since commands may run as 'nobody'.
        self.gate = Path(tempfile.mkdtemp(prefix="tinymlaas-lease-"))
        self.gate.chmod(0o777)
        services = Services(Settings(home=home, database_url=database_url))
        try:
            services.add_model(tiny_onnx, "digits")
            services.add_dataset("digits")
        finally:
            services.close()
        self.pipeline = home.parent / "pipeline.yaml"
        self.pipeline.write_text(yaml.safe_dump({
            "name": "cli-run", "model": "digits", "dataset": "digits", "evaluate": False,
            "steps": ["fuse", {"external": {"command": [
                step_python(), "-c", STEP, "{in}", "{out}", str(self.gate)]}}]}))
        self.meta = MetadataStore(database_url)
        self.cli: subprocess.Popen | None = None
        self.server: Server | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "TINYMLAAS_HOME": str(self.home),
                "TINYMLAAS_DATABASE_URL": self.database_url,
                "TINYMLAAS_LEASE_TTL_S": str(TTL_S), "TINYMLAAS_STEP_TIMEOUT_S": "120"}

    def start_cli(self) -> str:
        """``tinymlaas run`` in its own process; returns the run's id once the slow step
        is executing."""
        with (self.home.parent / "cli.log").open("ab") as log:
            self.cli = subprocess.Popen(
                [sys.executable, "-m", "tinymlaas.cli.main", "run", str(self.pipeline)],
                env=self.env(), start_new_session=True, stdout=log, stderr=subprocess.STDOUT)

        def started() -> bool:
            assert self.cli is not None and self.cli.poll() is None, self.cli_log()
            return (self.gate / "started").exists()

        wait_for(started, 120)
        [run] = self.meta.list_runs()
        assert run.status is RunStatus.running
        assert [s.status for s in run.steps] == [StepStatus.succeeded, StepStatus.running]
        owner = self.meta.run_lease(run.id)[0]
        assert owner is not None and f":{self.cli.pid}:" in owner
        return run.id

    def start_server(self, **env: str) -> Server:
        self.server = Server(self.home, self.database_url).start(
            TINYMLAAS_LEASE_TTL_S=str(TTL_S), TINYMLAAS_EXTERNAL_STEPS="everyone", **env)
        return self.server

    def cli_log(self) -> str:
        path = self.home.parent / "cli.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def calls(self) -> int:
        path = self.gate / "calls"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def close(self) -> None:
        (self.gate / "go").touch()  # a step still waiting ends
        if self.cli is not None and self.cli.poll() is None:
            self.cli.kill()
            self.cli.wait()
        if self.server is not None:
            self.server.stop()
        self.meta.close()
        shutil.rmtree(self.gate, ignore_errors=True)


@pytest.fixture
def setup(tmp_path: Path, database_url: str, tiny_onnx: Path) -> Iterator[Setup]:
    shared = Setup(tmp_path / "home", database_url, tiny_onnx)
    yield shared
    shared.close()


def test_a_server_started_beside_a_cli_run_leaves_it_alone(setup: Setup) -> None:
    run_id = setup.start_cli()
    started_at = setup.meta.get_run(run_id).started_at
    setup.start_server()  # recovers at start-up, then reaps every TTL
    time.sleep(2.5 * TTL_S)  # longer than the lease: only the CLI's heartbeat keeps it
    during = setup.meta.get_run(run_id)
    assert during.status is RunStatus.running, during.error
    assert f":{setup.cli.pid}:" in (setup.meta.run_lease(run_id)[0] or "")

    (setup.gate / "go").touch()
    assert setup.cli.wait(120) == 0, setup.cli_log()
    final = setup.meta.get_run(run_id)
    assert final.status is RunStatus.succeeded, final.error
    assert [s.status for s in final.steps] == [StepStatus.succeeded, StepStatus.succeeded]
    assert final.error is None and final.output_sha == final.steps[1].output_sha
    assert final.started_at == started_at  # executed once, by the CLI:
    assert setup.calls() == 1  # the server neither marked it failed nor resubmitted it
    assert setup.meta.run_lease(run_id) == (None, None)
    assert setup.server is not None and setup.server.process.poll() is None


@pytest.mark.parametrize("resume", [True, False], ids=["resume", "no-resume"])
def test_a_killed_cli_run_is_recovered_by_the_server_once_its_lease_expires(
        setup: Setup, resume: bool) -> None:
    setup.start_server(TINYMLAAS_RESUME_INTERRUPTED=str(resume).lower())
    run_id = setup.start_cli()
    assert setup.cli is not None
    workers = psutil.Process(setup.cli.pid).children(recursive=True)
    os.kill(setup.cli.pid, signal.SIGKILL)
    setup.cli.wait()
    for worker in workers:  # the whole CLI is gone, its step too
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()
    owner, expires = setup.meta.run_lease(run_id)
    assert owner is not None and f":{setup.cli.pid}:" in owner and expires is not None
    assert setup.meta.get_run(run_id).status is RunStatus.running

    # The server's reaper recovers it after the lease expires, within about one TTL.
    def left_running() -> bool:
        return (setup.meta.get_run(run_id).status is not RunStatus.running
                or setup.meta.run_lease(run_id)[0] != owner)

    wait_for(left_running, 4 * TTL_S + 10)
    recovered_at = datetime.now(UTC)
    assert recovered_at > expires
    assert recovered_at - expires < timedelta(seconds=2 * TTL_S)  # the reaper runs every TTL

    if resume:  # resubmitted: it resumes from the step cache
        wait_for(lambda: setup.meta.get_run(run_id).status not in {
            RunStatus.running, RunStatus.failed, RunStatus.pending}, 120)
        final = setup.meta.get_run(run_id)
        assert final.status is RunStatus.succeeded, final.error
        assert [s.status for s in final.steps] == [StepStatus.cached, StepStatus.succeeded]
        assert final.started_at is not None and final.started_at > expires
        assert setup.calls() == 2
    else:
        time.sleep(TTL_S)  # not resubmitted later either
        final = setup.meta.get_run(run_id)
        assert final.status is RunStatus.failed and "interrupted" in (final.error or "")
        assert [s.status for s in final.steps] == [StepStatus.succeeded, StepStatus.failed]
        assert setup.calls() == 1
    assert setup.meta.run_lease(run_id) == (None, None)
    assert setup.meta.expired_running_runs() == []
