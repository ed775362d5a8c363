"""A job that no worker of its site ever claims does not wait forever: the Celery executor,
on the real RabbitMQ broker and a real SQLite database, fails it after the queue timeout
(TINYMLAAS_SITE_QUEUE_TIMEOUT_S) and says that no live worker of the site took it; a job
claimed in time runs to its end however long it takes."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import need_service
from tinymlaas.config import Settings
from tinymlaas.contracts.jobs import ArtifactRef, JobResult, TransformJob
from tinymlaas.domain.sites import Site
from tinymlaas.executors.celery import CeleryExecutor
from tinymlaas.executors.queues import queue_of
from tinymlaas.service import Services
from tinymlaas.store import MetadataStore
from tinymlaas.store.attempts import AttemptStore
from tinymlaas.store.sites import SiteStore

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbit_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[CeleryExecutor, Site]]:
    """A site that no worker serves, and an executor whose jobs wait 1 s for a claim."""
    need_service(_rabbit_up(), f"RabbitMQ at {RABBITMQ}")
    meta = MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")
    meta.ensure_project("default")
    site = SiteStore(meta).add_site(Site(id=f"site-{uuid.uuid4().hex[:12]}",
                                         project="default", name="dock"),
                                    hashlib.sha256(b"token").hexdigest())
    executor = CeleryExecutor(RABBITMQ, AttemptStore(meta), queue_timeout_s=1.0)
    try:
        yield executor, site
    finally:
        with executor.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue_of(site.id))
        executor.close()
        meta.close()


def _job(job_id: str) -> TransformJob:
    return TransformJob(job_id=job_id, project="default", transformer="fuse", params={},
                        input=ArtifactRef(sha256="a" * 64, kind="onnx"))


def _waiting(executor: CeleryExecutor, site: Site) -> int:
    with executor.app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue_of(site.id), passive=True).message_count


def test_a_job_no_worker_claims_fails_naming_the_site(
        site: tuple[CeleryExecutor, Site]) -> None:
    executor, dock = site
    handle = executor.submit(_job("run-q-0-abc"), dock.id, "run-q")
    result = executor.wait(handle)
    assert not result.ok
    assert result.error is not None
    assert "no live worker of site 'dock' took this step" in result.error, result.error
    assert "start one with `tinymlaas worker" in result.error and "--site dock" in result.error
    row = executor.attempts.get("run-q-0-abc")
    assert row.status == "failed" and row.attempt == 0 and row.worker_id is None
    assert _waiting(executor, dock) == 1  # the message is still there: nobody consumed it
    # Its message, taken late by a worker, finds the job ended: the claim is refused.
    assert executor.attempts.claim("run-q-0-abc", dock.id, "w-late", 30) is None


def test_a_job_claimed_in_time_runs_past_the_queue_timeout(
        site: tuple[CeleryExecutor, Site]) -> None:
    executor, dock = site
    attempts = executor.attempts
    handle = executor.submit(_job("run-r-0-abc"), dock.id, "run-r")
    assert attempts.claim("run-r-0-abc", dock.id, "w1", 30) is not None
    results: list[JobResult] = []
    waiter = threading.Thread(target=lambda: results.append(executor.wait(handle)),
                              daemon=True)
    waiter.start()
    time.sleep(1.5)  # longer than the queue timeout, while the step runs
    assert attempts.renew("run-r-0-abc", dock.id, "w1", 1, 30, 0.5, "half")
    assert attempts.finish("run-r-0-abc", dock.id, "w1", 1,
                           {"job_id": "run-r-0-abc", "ok": True, "metrics": {"n": 1}})
    waiter.join(timeout=60)
    assert [r.ok for r in results] == [True] and results[0].metrics == {"n": 1}


def test_the_queue_timeout_is_a_setting(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).site_queue_timeout_s == 3600.0
    services = Services(Settings(home=tmp_path, broker_url=RABBITMQ,
                                 site_queue_timeout_s=90))
    try:
        assert services.site_executor is not None
        assert services.site_executor.queue_timeout_s == 90
    finally:
        services.close()
