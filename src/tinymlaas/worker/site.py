"""A site's worker: takes the site's jobs from the broker and runs them here.

It connects outbound only: to the broker (its site's queue) and to the server's API, with
the site's token. For each message it claims the job's attempt (a job another worker holds
alive, or one that has ended, is acknowledged and dropped), downloads the inputs through
their signed URLs into a local artifact cache (sha256 checked, resumed with Range), runs
the step with the local executor's machinery (own process, timeout, memory limit) in its
work directory, renews the attempt's lease every third of its life with the step's
progress, uploads the output through a signed URL and posts the result. A heartbeat that
the server refuses (the job was cancelled, or taken over after this worker stalled)
stops the step.

The worker also says it is alive on the site's heartbeat endpoint, with the jobs it runs,
so ``tinymlaas sites list`` shows it and runs can be submitted for its site.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from tinymlaas.artifacts.http import HttpArtifactStore
from tinymlaas.artifacts.local import LocalArtifactStore
from tinymlaas.contracts.jobs import (
    ArtifactRef,
    DescribeJob,
    EvaluateJob,
    Job,
    JobResult,
    TransformJob,
    map_artifacts,
)
from tinymlaas.errors import (
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    TinymlaasError,
)
from tinymlaas.executors.queues import TASK_NAME, celery_app
from tinymlaas.worker import site_data

__all__ = ["SiteWorker"]

log = logging.getLogger("tinymlaas.worker")
_JOB: TypeAdapter[TransformJob | EvaluateJob | DescribeJob] = TypeAdapter(Job)
#: What a message holds (the job ids of the site endpoints).
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
#: How often the site hears that this worker is alive.
SITE_HEARTBEAT_S = 10.0


class SiteApi:
    """The site endpoints of the server, with the site's token."""

    def __init__(self, server: str, site: str, token: str, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.site = site
        self._http = httpx.Client(base_url=f"{self.server}/api/v1/sites/{quote(site, safe='')}",
                                  headers={"Authorization": f"Bearer {token}"},
                                  timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(f"cannot reach the server {self.server}: "
                                          f"{exc}") from exc
        if response.status_code == 409:
            raise ConflictError(_detail(response))
        if response.status_code == 404:
            raise NotFoundError(_detail(response))
        if response.status_code >= 400:
            raise TinymlaasError(f"{method} {path}: {_detail(response)} "
                                 f"(HTTP {response.status_code})")
        return response.json()

    def config(self) -> dict[str, Any]:
        return dict(self._call("GET", "/worker-config"))

    def heartbeat(self, worker_id: str, running: list[str]) -> list[str]:
        """Say this worker is alive; returns the site's queued dataset descriptions."""
        answer = self._call("POST", "/heartbeat", {
            "worker_id": worker_id, "hostname": socket.gethostname()[:255] or "host",
            "running_steps": running})
        return [job for job in answer.get("describe_jobs", []) if isinstance(job, str)]

    def claim(self, job_id: str, worker_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/jobs/{job_id}/claim", {"worker_id": worker_id}))

    def renew(self, job_id: str, worker_id: str, attempt: int, progress: float,
              message: str) -> None:
        self._call("POST", f"/jobs/{job_id}/heartbeat",
                   {"worker_id": worker_id, "attempt": attempt, "progress": progress,
                    "message": message[:500]})

    def result(self, job_id: str, worker_id: str, attempt: int, result: JobResult) -> None:
        self._call("POST", f"/jobs/{job_id}/result",
                   {"worker_id": worker_id, "attempt": attempt,
                    "result": result.model_dump(mode="json")})

    def upload_url(self, job_id: str, worker_id: str, attempt: int, sha256: str) -> str:
        """A PUT URL for the output of the attempt this worker holds (one per attempt)."""
        url = str(self._call("POST", "/blob-urls",
                             {"sha256": sha256, "method": "PUT", "job_id": job_id,
                              "attempt": attempt, "worker_id": worker_id})["url"])
        return url if url.startswith("http") else self.server + url


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("message") or body.get("detail") or body)
    except ValueError:
        return response.text[:200]


class _Running:
    """One job this worker runs: its attempt, its progress and whether to stop it."""

    def __init__(self, job_id: str, attempt: int) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.progress = 0.0
        self.message = "started"
        self.lost = threading.Event()
        self.done = threading.Event()


class SiteWorker:
    """Runs a site's jobs.

    Args:
        server: The server's address (``http://host:port``).
        site: The site's name.
        token: The site's token.
        data_root: The site's data directory (the site's datasets live under it).
        work_dir: The worker's own directory: its artifact cache and the steps' files.
        concurrency: Jobs run at once.
        broker_url: The broker; default: the one the server advertises.
    """

    def __init__(self, server: str, site: str, token: str, data_root: Path, *,
                 work_dir: Path | None = None, concurrency: int = 1,
                 broker_url: str | None = None, timeout_s: float = 3600.0,
                 memory_mb: int = 8192) -> None:
        self.api = SiteApi(server, site, token)
        self.data_root = Path(data_root)
        self.work_dir = Path(work_dir) if work_dir else self.data_root / ".tinymlaas-worker"
        self.concurrency = concurrency
        self.worker_id = f"{socket.gethostname()[:60] or 'host'}:{os.getpid()}"
        self._broker = broker_url
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.report_timeout_s = 600.0
        self.cache = LocalArtifactStore(self.work_dir / "artifacts")
        self._executor: Any = None
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.config: dict[str, Any] = {}

    # lifecycle ----------------------------------------------------------------------------

    def connect(self) -> dict[str, Any]:
        """Ask the server for the site's queue and broker; say this worker is alive."""
        self.config = self.api.config()
        if self._broker:
            self.config["broker_url"] = self._broker
        self.api.heartbeat(self.worker_id, [])
        return self.config

    def run(self) -> None:
        """Listen to the site's queue until stopped (Ctrl-C, SIGTERM)."""
        if not self.config:
            self.connect()
        app = celery_app(self.config["broker_url"], f"tinymlaas-worker-{self.api.site}")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request: noise

        @app.task(name=TASK_NAME, acks_late=True, ignore_result=True)
        def run_job(job_id: str) -> None:
            self.handle(job_id)

        beat = threading.Thread(target=self._site_heartbeat, daemon=True,
                                name="tinymlaas-site-heartbeat")
        beat.start()
        try:
            app.worker_main(["worker", "--queues", self.config["queue"], "--pool", "threads",
                             "--concurrency", str(self.concurrency), "--prefetch-multiplier",
                             "1", "--without-gossip", "--without-mingle",
                             "--without-heartbeat", "--loglevel", "INFO",
                             "--hostname", f"{self.worker_id}@{self.api.site}"])
        finally:
            self._stop.set()
            self.api.close()

    def _site_heartbeat(self) -> None:
        """Say this worker is alive every few seconds, and take the dataset descriptions
        the answer lists in threads of their own: they are short and a user waits on each,
        so they do not queue behind long steps on the broker (the message that arrives
        later finds the job ended and is dropped)."""
        while not self._stop.wait(SITE_HEARTBEAT_S):
            with self._lock:
                running = list(self._running)
            try:
                queued = self.api.heartbeat(self.worker_id, running)
            except TinymlaasError as exc:
                log.warning("site heartbeat: %s", exc.message)
                continue
            for job_id in queued:
                if job_id not in running:
                    threading.Thread(target=self.handle, args=(job_id,), daemon=True,
                                     name=f"describe-{job_id[:40]}").start()

    # one job ------------------------------------------------------------------------------

    def _local_executor(self) -> Any:
        from tinymlaas.executors.local import LocalExecutor

        with self._lock:
            if self._executor is None:
                self._executor = LocalExecutor(self.cache, self.work_dir / "jobs",
                                               self.timeout_s, self.memory_mb,
                                               state_dir=self.work_dir / "procs")
            return self._executor

    def handle(self, job_id: str) -> str:
        """Run one message's job (a message holds a job id; the claim gives the job);
        returns what became of it: ``dropped`` (another worker holds it, it ended, or it is
        not one of this site's), ``lost`` (taken from this worker), ``done``."""
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            log.warning("message dropped: %.80r is not a job id", job_id)
            return "dropped"
        try:
            claim = self.api.claim(job_id, self.worker_id)
        except (ConflictError, NotFoundError) as exc:
            log.info("job %s dropped: %s", job_id, exc.message)
            return "dropped"
        job = _JOB.validate_python(claim["job"])
        log.info("job %s claimed: attempt %s", job.job_id, claim["attempt"])
        running = _Running(job.job_id, int(claim["attempt"]))
        with self._lock:
            self._running[job.job_id] = running
        beat = threading.Thread(target=self._renew, args=(running, float(claim["lease_ttl_s"])),
                                daemon=True, name=f"lease-{job.job_id}")
        beat.start()
        try:
            result = (self._describe(job) if isinstance(job, DescribeJob)
                      else self._execute(job, running))
            if running.lost.is_set():
                return "lost"
            self._retrying(lambda: self.api.result(job.job_id, self.worker_id,
                                                   running.attempt, result))
            log.info("job %s done: %s", job.job_id, "ok" if result.ok else result.error)
            return "done"
        except ConflictError as exc:
            log.warning("job %s: %s", job.job_id, exc.message)
            return "lost"
        finally:
            running.done.set()
            with self._lock:
                self._running.pop(job.job_id, None)

    def _retrying(self, call: Callable[[], object]) -> None:
        """Call the server until it answers (it may be restarting), for at most
        ``report_timeout_s``: a finished step's result is not thrown away for a blip."""
        deadline = time.monotonic() + self.report_timeout_s
        while True:
            try:
                call()
                return
            except ServiceUnavailableError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("server unreachable, retrying: %s", exc.message)
                time.sleep(1.0)

    def _renew(self, running: _Running, ttl_s: float) -> None:
        """The attempt's heartbeat, every third of the lease's life."""
        while not running.done.wait(ttl_s / 3):
            try:
                self.api.renew(running.job_id, self.worker_id, running.attempt,
                               running.progress, running.message)
            except ConflictError as exc:
                log.warning("job %s: %s", running.job_id, exc.message)
                running.lost.set()
                handle = getattr(running, "handle", None)
                if handle is not None:
                    self._local_executor().cancel(handle)
                return
            except TinymlaasError as exc:  # the server is away: the lease may still hold
                log.warning("job %s: lease not renewed: %s", running.job_id, exc.message)

    def _fetch(self, ref: ArtifactRef) -> ArtifactRef:
        """The input in the local cache (downloaded once, its sha256 checked)."""
        if not self.cache.exists(ref.sha256):
            if not ref.url:
                raise TinymlaasError(f"input {ref.sha256[:12]} has no URL to fetch it from")
            url = ref.url if ref.url.startswith("http") else self.api.server + ref.url
            target = self.work_dir / "downloads" / ref.sha256
            with HttpArtifactStore(lambda sha, method: url) as store:
                store.get_file(ref.sha256, target, url=url)
            self.cache.adopt(target, ref.sha256)
        return ref.model_copy(update={"url": None})

    def _describe(self, job: DescribeJob) -> JobResult:
        """Read a dataset file of the site; only what it holds goes to the server."""
        try:
            description = site_data.describe(self.data_root, job.data, self.cache,
                                             self.work_dir / "datasets")
        except TinymlaasError as exc:
            return JobResult(job_id=job.job_id, ok=False, error=exc.message,
                             error_type=type(exc).__name__)
        log.info("job %s: %s described: %s samples, sha256 %s", job.job_id, job.data.path,
                 description["num_samples"], description["sha256"][:12])
        return JobResult(job_id=job.job_id, ok=True, metrics=description)

    def _execute(self, job: TransformJob | EvaluateJob, running: _Running) -> JobResult:
        try:
            if job.dataset is not None and job.dataset.site is not None:
                site_data.materialize(self.data_root, job.dataset.site,
                                      job.dataset.artifact.sha256, self.cache,
                                      self.work_dir / "datasets")
            local = map_artifacts(job, self._fetch)
            executor = self._local_executor()
            handle = executor.submit(local)
        except TinymlaasError as exc:
            return JobResult(job_id=job.job_id, ok=False, error=exc.message,
                             error_type=type(exc).__name__)
        running.handle = handle  # type: ignore[attr-defined]

        def progress(event: Any) -> None:
            running.progress, running.message = event.fraction, event.message

        result: JobResult = executor.wait(handle, progress)
        if result.ok and result.output is not None:
            output = result.output.sha256
            self._retrying(lambda: self._upload(output, running))
        return result

    def _upload(self, sha256: str, running: _Running) -> None:
        """Send the attempt's output to the server through a signed PUT URL (given only
        while this worker holds the attempt; checked there against its sha256)."""
        path = self.cache.path(sha256)
        url = self.api.upload_url(running.job_id, self.worker_id, running.attempt, sha256)
        try:
            response = httpx.put(url, content=_chunks(path), timeout=300.0,
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Length": str(path.stat().st_size)})
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(f"upload of {sha256[:12]}: {exc}") from exc
        if response.status_code >= 400:
            raise TinymlaasError(f"upload of {sha256[:12]}: {_detail(response)} "
                                 f"(HTTP {response.status_code})")


def wait_for_server(api: SiteApi, timeout_s: float) -> None:
    """Retry the first call until the server answers (a worker started with its server)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            api.config()
            return
        except ServiceUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
