"""The Studio server: one FastAPI application that serves the API under ``/api/v1`` and
the web pages, composed here so that neither of the two imports the other's pages or routes.

:func:`create_app` opens the stores, recovers runs a stopped process left behind (marked
failed, then resubmitted so they resume from the step cache) and starts the background
run queue; while it serves, a reaper recovers every lease TTL the runs whose executing
process (another server, a CLI run) stopped renewing their lease. Run it with
``tinymlaas serve`` (one process: runs execute in its threads and their steps in worker
processes).
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI

from tinymlaas import __version__
from tinymlaas.api.deps import Studio
from tinymlaas.api.docs import install_docs
from tinymlaas.api.errors import install_error_handlers
from tinymlaas.api.middleware import BodyLimit, RejectNulBytes, RouteLimit, SecurityHeaders
from tinymlaas.api.routes import api_router, blobs, datasets, ddi, fleet, models
from tinymlaas.api.routes.ddi import router as ddi_router
from tinymlaas.api.runtime import EventBus, Reaper, RunQueue
from tinymlaas.api.uploads import sweep_stale_uploads
from tinymlaas.config import Settings, get_settings
from tinymlaas.domain import RunStatus
from tinymlaas.notify import Notifier
from tinymlaas.service import Services
from tinymlaas.service.fleet import MAX_RESULT_BYTES, Fleet
from tinymlaas.service.searches import Searches
from tinymlaas.service.users import AccountService
from tinymlaas.web import install_web
from tinymlaas.web.routes import assets as web_assets

__all__ = ["API_PREFIX", "LARGE_BODIES", "create_app", "open_studio", "recover_runs"]

API_PREFIX = "/api/v1"
log = logging.getLogger("tinymlaas.api")
_SLACK = 1024**2  # for multipart framing and JSON around the data
#: The routes (by endpoint) whose bodies may pass ``max_body_bytes``: the streaming
#: uploads (``None``: they write the body to disk as it comes and cut it off at their own
#: limit) and the routes that take a device's samples or outputs (at most
#: ``MAX_RESULT_BYTES``, base64 in the JSON of a result). Every other route, a route added
#: later too, is held to ``max_body_bytes``.
LARGE_BODIES: dict[Callable[..., Any], RouteLimit] = {
    models.upload_model: None,
    datasets.upload_dataset: None,
    blobs.put_blob: None,
    web_assets.upload_model: None,
    web_assets.upload_dataset: None,
    fleet.request_inference_on_samples: (MAX_RESULT_BYTES + _SLACK, None),
    ddi.inference_result: (MAX_RESULT_BYTES * 4 // 3 + _SLACK, None),
}


def _document_body_limits(app: FastAPI) -> None:
    """Every operation that takes a body documents the 413 of a body past its limit."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            too_large = {"description": "The request body is larger than its limit "
                                        "(max_body_bytes, or the upload's own limit)",
                         "content": {"application/json": {"schema": {
                             "$ref": "#/components/schemas/ErrorBody"}}}}
            for item in generate().get("paths", {}).values():
                for operation in item.values():
                    if isinstance(operation, dict) and "requestBody" in operation:
                        operation.setdefault("responses", {}).setdefault("413", too_large)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def open_studio(settings: Settings | None = None) -> Studio:
    """Stores, accounts, the event bus and the run queue for one server process."""
    settings = settings or get_settings()
    services = Services(settings)
    accounts = AccountService(services)
    bus = EventBus()
    notifier = Notifier(settings, accounts.store)
    # Runs only queue their notifications: the notifier delivers from threads of its own.
    runs = RunQueue(services, bus, notifier, max_workers=settings.server_runs)
    # Searches execute their candidate runs in their own threads, publishing on the bus.
    searches = Searches(services, on_event=bus.publish, run_events=bus.publish,
                        max_workers=settings.server_runs)
    return Studio(settings, services, accounts, bus, runs, searches, Fleet(services))


def recover_runs(studio: Studio, *, pending: bool = True) -> dict[str, list[str]]:
    """Leave no run stuck: mark failed the runs left ``running`` by a process that stopped
    (their lease expired; runs another live process executes are left alone); with
    ``resume_interrupted`` queue them again, with the ``pending`` ones when ``pending``, so
    they resume from the step cache."""
    interrupted = studio.services.engine.recover_expired()
    waiting = studio.services.meta.runs_with_status(RunStatus.pending) if pending else []
    resumed: list[str] = []
    if studio.settings.resume_interrupted:
        # Each from the status it had here: when several server processes start on one
        # database, each queues the pending runs and one executes each.
        for run_id, status in [*((i, RunStatus.failed) for i in interrupted),
                               *((w, RunStatus.pending) for w in waiting)]:
            if studio.runs.submit(run_id, {status}):
                resumed.append(run_id)
    if interrupted:
        log.warning("%d interrupted run(s) marked failed%s", len(interrupted),
                    ", resubmitted" if resumed else "")
    return {"interrupted": interrupted, "resumed": resumed}


#: Net allocations of container objects between two young collections of the cyclic
#: garbage collector in the server's processes (Python's default: 700). With 700, under
#: load (about 50 requests in flight per process) a young collection came every few
#: requests and promoted the live objects of those in flight, which then died in the
#: oldest generation: every second or two enough had piled up there to set off a full
#: collection of the process's 35,000 to 100,000 objects, 10 to 90 ms in which every
#: request of the process waited (``GET /runs/{id}`` on PostgreSQL: p99 350 ms, p50
#: 80 ms). With 20,000 a young collection comes every few seconds and no full collection
#: came in 25 s of the same load: p99 134 to 147 ms. Most of a request's objects are
#: freed by their reference counts, not by the collector; cycles are still collected,
#: later (at most 20,000 more objects held).
GC_YOUNG_THRESHOLD = 20_000
#: prctl(2)'s option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """Have the kernel send this process SIGTERM when the process that started it dies
    (Linux): a server process whose main process was killed (``kill -9``, the OOM killer)
    would otherwise go on serving the port and executing runs, with nothing to stop it."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def served_app() -> Any:
    """What ``tinymlaas serve``'s processes run: the app, behind the reverse proxies of
    ``TINYMLAAS_TRUSTED_PROXIES`` when there are any (their ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` give the client's address and scheme; from anyone else the
    headers are ignored). The process collects cyclic garbage less often
    (:data:`GC_YOUNG_THRESHOLD`) and stops when the server's main process dies."""
    _stop_with_parent()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    app = create_app()
    proxies = app.state.studio.settings.trusted_proxies.strip()
    if not proxies:
        return app
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    return ProxyHeadersMiddleware(app, trusted_hosts=proxies)  # type: ignore[arg-type]


def create_app(settings: Settings | None = None, studio: Studio | None = None) -> FastAPI:
    """The app; pass ``studio`` to share one between apps (tests), else one is opened."""
    studio = studio or open_studio(settings)
    recovered = recover_runs(studio)
    studio.searches.recover()
    sweep_stale_uploads(studio.settings.home / "uploads")  # left by a crashed server

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The pool that runs the handlers that block on the database (AnyIO's, 40 threads
        # by default: under load they mostly contend for the interpreter and the pool).
        to_thread.current_default_thread_limiter().total_tokens = studio.settings.server_threads
        reaper = Reaper(lambda: recover_runs(studio, pending=False),
                        studio.settings.lease_ttl_s).start()
        yield
        reaper.stop()
        studio.runs.shutdown(wait=False)
        studio.searches.shutdown(wait=False)
        if isinstance(studio.runs.on_finished, Notifier):
            studio.runs.on_finished.close(timeout_s=2.0)  # then gives up on the rest

    app = FastAPI(title="tinymlaas Studio API", version=__version__, lifespan=lifespan,
                  description="Register models, datasets and devices; run compression "
                              "pipelines; compare and download the results. Text anywhere "
                              "(paths, queries, headers, bodies) may not hold NUL "
                              "characters: such requests are refused with a 400.",
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None)
    app.state.studio = studio
    app.state.recovered = recovered
    install_error_handlers(app)
    app.add_middleware(BodyLimit, routes=LARGE_BODIES,
                       default=(studio.settings.max_body_bytes, "TINYMLAAS_MAX_BODY_BYTES"))
    app.add_middleware(RejectNulBytes)
    app.add_middleware(SecurityHeaders)  # outermost: on every response, the 400s above too
    app.include_router(api_router, prefix=API_PREFIX)
    app.include_router(ddi_router)  # the devices' side, at /ddi (hawkBit DDI's paths)
    install_docs(app, API_PREFIX)  # /api/v1/docs and /api/v1/redoc, no CDN
    _document_body_limits(app)
    install_web(app)
    return app
