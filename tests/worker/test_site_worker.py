"""Site workers against the real brokers: a real ``tinymlaas serve`` with
TINYMLAAS_BROKER_URL, real ``tinymlaas worker`` processes, RabbitMQ (and Redis).

- a run made with a site runs its steps and evaluations on the site's worker and gives the
  output the same pipeline gives in-process;
- ``kill -9`` of the worker mid-step, then a new worker: the step completes once, with the
  same output hash (the redelivered message is dropped while the dead attempt's lease
  lives; the reaper queues the job again when it expires);
- a run for a site with no live worker is refused at submission (409);
- a site's token opens only its own site's endpoints and jobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import step_python
from sites_harness import QUANTIZE, RABBITMQ, REDIS, Studio, reachable, running_studio
from tinymlaas.api.testing import free_port
from tinymlaas.client import Client
from tinymlaas.config import Settings
from tinymlaas.errors import ConflictError
from tinymlaas.service import Services
from tinymlaas.service.pipelines import parse_pipeline


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with running_studio(tmp_path_factory.mktemp("rabbit"), RABBITMQ, 5672,
                        "RabbitMQ") as studio:
        yield studio


def _in_process_output(root: Path, model_path: Path, pipeline: dict) -> tuple[str, float]:
    """The same pipeline on the same inputs run by the embedded executor (no broker)."""
    services = Services(Settings(home=root / "local-home"))
    try:
        model = services.add_model(model_path, "m")
        dataset = services.add_dataset("digits")
        run = services.create_run(parse_pipeline(pipeline, "pipeline"), model=model.id,
                                  dataset=dataset.id)
        run = services.execute_run(run.id)
        assert run.status.value == "succeeded", run.error
        assert run.output_sha is not None
        return run.output_sha, run.result["accuracy"]
    finally:
        services.close()


def test_a_run_at_a_site_gives_the_in_process_output(rabbit: Studio, tmp_path: Path) -> None:
    site = rabbit.client.create_site("factory")
    rabbit.start_worker("factory", site.token, log_name="factory")
    run = rabbit.client.create_run(rabbit.model.id, rabbit.dataset.id, pipeline=QUANTIZE,
                                   site="factory")
    assert run.site == site.id
    done = rabbit.wait_run(run.id)
    assert done.status == "succeeded", (done.error, rabbit.log.read_text()[-2000:])
    expected_sha, expected_accuracy = _in_process_output(tmp_path, rabbit.model_path, QUANTIZE)
    assert done.output_sha == expected_sha
    assert done.result["accuracy"] == pytest.approx(expected_accuracy, abs=1e-9)
    # The step and both evaluations ran at the site: its worker claimed each once.
    log = (rabbit.root / "factory.log").read_text()
    claims = [line for line in log.splitlines() if " claimed: attempt " in line]
    assert len(claims) == 3, claims
    assert all(line.endswith("attempt 1") for line in claims)
    # The output came back through a signed upload: stored under its sha256, whole.
    stored = rabbit.home / "artifacts" / done.output_sha[:2] / done.output_sha
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == done.output_sha


def _slow_copy(marker: Path, started: Path, seconds: int) -> dict:
    """One command step that notes its start and end in ``marker`` and copies its input."""
    script = ("import shutil, sys, time, pathlib; m = open(sys.argv[3], 'a'); "
              "m.write('start\\n'); m.flush(); pathlib.Path(sys.argv[4]).touch(); "
              f"time.sleep({seconds}); shutil.copy(sys.argv[1] + '/model.onnx', "
              "sys.argv[2] + '/model.onnx'); m.write('end\\n'); m.flush()")
    return {"steps": [{"external": {"command": [step_python(), "-c", script, "{in}",
                                                "{out}", str(marker), str(started)]}}],
            "evaluate": False}


def test_kill_9_of_the_worker_mid_step_then_a_new_worker_completes_it_once(
        rabbit: Studio, shared_dir: Path) -> None:
    site = rabbit.client.create_site("plant")
    marker, started = shared_dir / "executions.txt", shared_dir / "started"
    pipeline = _slow_copy(marker, started, 6)
    first = rabbit.start_worker("plant", site.token, log_name="plant-1")
    run = rabbit.client.create_run(rabbit.model.id, pipeline=pipeline, site="plant")
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline, (rabbit.root / "plant-1.log").read_text()[-3000:]
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert rabbit.client.get_run(run.id).status == "running"
    rabbit.start_worker("plant", site.token, log_name="plant-2")
    done = rabbit.wait_run(run.id)
    assert done.status == "succeeded", done.error
    # The output is the input model copied: the same hash, whichever attempt made it.
    assert done.output_sha == hashlib.sha256(rabbit.model_path.read_bytes()).hexdigest()
    time.sleep(2)  # a second completion, had there been one, would have been written
    lines = marker.read_text().split()
    assert lines.count("end") == 1, lines
    assert lines.count("start") == 2, lines  # the killed attempt, and the one that ended
    second_log = (rabbit.root / "plant-2.log").read_text()
    # The broker redelivered the killed worker's message and the reaper queued the job
    # again: one message took the job's second attempt, any other was dropped.
    claims = [line for line in second_log.splitlines() if " claimed: attempt " in line]
    assert len(claims) == 1 and claims[0].endswith("attempt 2"), second_log[-3000:]


def test_a_server_restart_mid_step_follows_the_job_and_completes_it_once(
        rabbit: Studio, shared_dir: Path) -> None:
    site = rabbit.client.create_site("mill")
    marker, started = shared_dir / "executions.txt", shared_dir / "started"
    rabbit.start_worker("mill", site.token, log_name="mill")
    run = rabbit.client.create_run(rabbit.model.id, pipeline=_slow_copy(marker, started, 8),
                                   site="mill")
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline, (rabbit.root / "mill.log").read_text()[-3000:]
        time.sleep(0.1)
    rabbit.restart(down_s=2)  # the run's lease expires; the new server resumes the run
    done = rabbit.wait_run(run.id)
    assert done.status == "succeeded", done.error
    assert done.output_sha == hashlib.sha256(rabbit.model_path.read_bytes()).hexdigest()
    time.sleep(2)
    lines = marker.read_text().split()
    assert lines.count("end") == 1, lines


def test_two_sites_each_run_their_own_steps(rabbit: Studio, shared_dir: Path) -> None:
    """Each site's worker takes only its own site's jobs (one queue per site)."""
    names = ("east", "west")
    for name in names:
        site = rabbit.client.create_site(name)
        rabbit.start_worker(name, site.token, log_name=name)
    runs = {}
    for name in names:
        for i in range(2):
            tag = shared_dir / f"{name}-{i}"
            runs[rabbit.client.create_run(rabbit.model.id, pipeline=_slow_copy(tag, tag, i),
                                          site=name).id] = name
    for run_id, name in runs.items():
        done = rabbit.wait_run(run_id)
        assert done.status == "succeeded", done.error
        log = (rabbit.root / f"{name}.log").read_text()
        assert f"job {run_id}-0-" in log  # claimed by its own site's worker
        other = "west" if name == "east" else "east"
        assert run_id not in (rabbit.root / f"{other}.log").read_text()


def test_cancelling_a_run_stops_its_step_at_the_site(rabbit: Studio,
                                                     shared_dir: Path) -> None:
    site = rabbit.client.create_site("yard")
    marker, started = shared_dir / "executions.txt", shared_dir / "started"
    rabbit.start_worker("yard", site.token, log_name="yard")
    run = rabbit.client.create_run(rabbit.model.id, pipeline=_slow_copy(marker, started, 8),
                                   site="yard")
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline, (rabbit.root / "yard.log").read_text()[-3000:]
        time.sleep(0.1)
    rabbit.client.cancel_run(run.id)
    done = rabbit.wait_run(run.id)
    assert done.status == "cancelled"
    time.sleep(10)  # past the step's 8 s: it would have ended, had it not been stopped
    assert marker.read_text().split() == ["start"]
    assert "is no longer this worker's" in (rabbit.root / "yard.log").read_text()


def test_a_run_for_a_site_without_a_live_worker_is_refused(rabbit: Studio) -> None:
    rabbit.client.create_site("empty")
    before = len(rabbit.client.list_runs())
    with pytest.raises(ConflictError, match="no live worker") as caught:
        rabbit.client.create_run(rabbit.model.id, rabbit.dataset.id, pipeline=QUANTIZE,
                                 site="empty")
    assert caught.value.details["http_status"] == 409
    assert len(rabbit.client.list_runs()) == before  # nothing was recorded


def test_a_sites_token_opens_only_its_own_site(rabbit: Studio) -> None:
    mine = rabbit.client.create_site("north")
    theirs = rabbit.client.create_site("south")
    with httpx.Client(base_url=f"{rabbit.url}/api/v1/sites",
                      headers={"Authorization": f"Bearer {mine.token}"}) as http:
        assert http.get("/north/worker-config").status_code == 200
        assert http.get("/north/worker-config").json()["queue"] == f"tinymlaas.site.{mine.id}"
        for response in (http.get("/south/worker-config"),
                         http.post("/south/heartbeat", json={"worker_id": "w1",
                                                             "hostname": "h"}),
                         http.post("/south/jobs/run-x-0-abc/claim", json={"worker_id": "w1"})):
            assert response.status_code in (403, 404), response.text
        # A job that is not the site's (or does not exist) is not found.
        assert http.post("/north/jobs/run-x-0-abc/claim",
                         json={"worker_id": "w1"}).status_code == 404
    # A user's token is not a site token.
    with httpx.Client(base_url=f"{rabbit.url}/api/v1/sites") as http:
        response = http.get("/south/worker-config",
                            headers={"Authorization": f"Bearer {theirs.token}x"})
        assert response.status_code == 401
    # The worker command refuses another site's token before it listens.
    result = subprocess.run(
        [sys.executable, "-m", "tinymlaas.cli.main", "worker", "--server", rabbit.url,
         "--site", "south", "--token", mine.token, "--data-root", str(rabbit.root)],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("TINYMLAAS_")})
    assert result.returncode != 0
    assert "not found" in result.stderr, result.stderr


def test_a_run_at_a_site_over_redis(tmp_path: Path) -> None:
    with running_studio(tmp_path, REDIS, 6379, "Redis") as studio:
        site = studio.client.create_site("lab")
        studio.start_worker("lab", site.token, log_name="lab")
        run = studio.client.create_run(studio.model.id, studio.dataset.id, pipeline=QUANTIZE,
                                       site="lab")
        done = studio.wait_run(run.id)
        assert done.status == "succeeded", done.error
        expected_sha, _ = _in_process_output(tmp_path, studio.model_path, QUANTIZE)
        assert done.output_sha == expected_sha


def test_the_brokers_messages_hold_only_job_ids_and_the_job_comes_with_the_claim(
        rabbit: Studio) -> None:
    """Whoever reads a site's queue on the broker learns job ids, which open nothing: the
    job and the signed URLs of its inputs go only to a claim with the site's token."""
    import json

    from amqp.exceptions import NotFound
    from kombu import Connection

    site = rabbit.client.create_site("quay")
    other = rabbit.client.create_site("dock")
    with Client(rabbit.url, site.token) as worker:  # alive, but consuming nothing
        worker.site_heartbeat("quay", "w-quay", "bench")
    run = rabbit.client.create_run(rabbit.model.id, pipeline={"steps": ["fuse"],
                                                              "evaluate": False},
                                   site="quay")
    try:
        with Connection(RABBITMQ) as conn:
            deadline, message = time.monotonic() + 60, None
            while message is None:  # the queue appears with the step's message
                assert time.monotonic() < deadline, rabbit.log.read_text()[-2000:]
                with contextlib.suppress(NotFound):
                    message = conn.channel().basic_get(f"tinymlaas.site.{site.id}",
                                                       no_ack=True)
                time.sleep(0.2)
            body = message.body if isinstance(message.body, bytes) else message.body.encode()
        args = json.loads(body)[0]
        assert len(args) == 1 and args[0].startswith(f"{run.id}-0-"), body[:300]
        assert b"sig=" not in body and b"/blobs/" not in body and b"sha256" not in body
        job_id = args[0]
        with httpx.Client(base_url=f"{rabbit.url}/api/v1/sites") as http:
            theirs = http.post(f"/dock/jobs/{job_id}/claim", json={"worker_id": "w-dock"},
                               headers={"Authorization": f"Bearer {other.token}"})
            assert theirs.status_code == 404, theirs.text
            claim = http.post(f"/quay/jobs/{job_id}/claim", json={"worker_id": "w-quay"},
                              headers={"Authorization": f"Bearer {site.token}"})
            assert claim.status_code == 200, claim.text
            job = claim.json()["job"]
            assert job["job_id"] == job_id and job["transformer"] == "fuse"
            url = job["input"]["url"]
            assert "sig=" in url and job["input"]["sha256"] in url
            # The URL it got opens the input (and nothing else: see test_http_store).
            fetched = http.get(url if url.startswith("http") else f"{rabbit.url}{url}")
            assert fetched.status_code == 200
            assert hashlib.sha256(fetched.content).hexdigest() == job["input"]["sha256"]
    finally:
        rabbit.client.cancel_run(run.id)


def test_the_broker_stopped_for_10_s_mid_step_the_run_completes_once(
        tmp_path: Path, shared_dir: Path) -> None:
    """A broker of the test's own (redis-server on a free port), stopped while a step runs
    at the site and started again 10 s later, empty: the step's result goes through the API
    meanwhile, the run ends once, and the site takes new steps afterwards."""
    port = free_port()

    def broker() -> subprocess.Popen:
        process = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                    "--appendonly", "no"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not reachable(port):
            assert process.poll() is None and time.monotonic() < deadline, "no redis-server"
            time.sleep(0.1)
        return process

    redis = broker()
    try:
        with running_studio(tmp_path, f"redis://127.0.0.1:{port}/0", port,
                            "redis-server") as studio:
            site = studio.client.create_site("yard")
            marker, started = shared_dir / "executions.txt", shared_dir / "started"
            studio.start_worker("yard", site.token, log_name="yard")
            run = studio.client.create_run(studio.model.id, site="yard",
                                           pipeline=_slow_copy(marker, started, 6))
            deadline = time.monotonic() + 120
            while not started.exists():
                assert time.monotonic() < deadline, (studio.root / "yard.log").read_text()[-3000:]
                time.sleep(0.1)
            redis.terminate()
            redis.wait()
            time.sleep(10)
            redis = broker()
            done = studio.wait_run(run.id)
            assert done.status == "succeeded", done.error
            assert done.output_sha == hashlib.sha256(studio.model_path.read_bytes()).hexdigest()
            lines = marker.read_text().split()
            assert lines.count("start") == 1 and lines.count("end") == 1, lines
            after = studio.client.create_run(studio.model.id, site="yard",
                                             pipeline={"steps": ["fuse"], "evaluate": False})
            assert studio.wait_run(after.id).status == "succeeded", \
                (studio.root / "yard.log").read_text()[-3000:]
    finally:
        redis.kill()
        redis.wait()
