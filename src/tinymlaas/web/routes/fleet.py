"""The fleet (over-the-air deployment): the devices of the user's projects with their
installed version and health, enrollment with a one-time code shown once, rollouts with
their buttons (pause, resume, cancel, roll back) and the deploy form; a device's page with
its history, its on-device inference jobs, revoke and "run inference on this device".

Everything goes through :class:`~tinymlaas.service.fleet.FleetView`, the user's view of
the fleet: another user's device or rollout is "not found" (404), exactly as in the API.
A form's error comes back on the page that holds the form, with what was typed; an error
about what the page shows (a device or rollout not found) is the error page.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from tinymlaas.api.deps import StudioDep
from tinymlaas.domain import Project, Run, RunStatus
from tinymlaas.domain.entities import INSTALLER_KINDS
from tinymlaas.domain.fleet import RolloutState, device_health
from tinymlaas.errors import InvalidInputError, NotFoundError, TinymlaasError
from tinymlaas.service.fleet import CODE_TTL, MAX_INFERENCE_SAMPLES, FleetView, check_waves
from tinymlaas.web.render import render
from tinymlaas.web.routing import WebRoute
from tinymlaas.web.session import Viewer, WebSession, check_csrf

__all__ = ["deployable_runs", "router"]

router = APIRouter(route_class=WebRoute)

#: Which buttons a rollout in each state shows.
ROLLOUT_ACTIONS: dict[RolloutState, tuple[str, ...]] = {
    RolloutState.running: ("pause", "cancel", "rollback"),
    RolloutState.paused: ("resume", "cancel", "rollback"),
    RolloutState.finished: ("rollback",),
    RolloutState.cancelled: ("rollback",),
}
_VERBS = {"pause": "Pause", "resume": "Resume", "cancel": "Cancel", "rollback": "Roll back"}
_INSTALLER_VALUES = {k.value for k in INSTALLER_KINDS}


def _fleet(viewer: Viewer, studio: StudioDep) -> FleetView:
    return FleetView(studio.fleet, viewer.workspace)


def _writable(viewer: Viewer) -> list[Project]:
    """The user's projects they may change (owner or editor), for the forms."""
    ws = viewer.workspace
    return [p for p in ws.list_projects() if ws.roles.get(p.id) in {"owner", "editor"}]


def deployable_runs(viewer: Viewer, writable: set[str], limit: int = 100) -> list[Run]:
    """Finished runs of the ``writable`` projects whose last step is an installer (what a
    release is made from), newest first."""
    ws = viewer.workspace
    produces = {t.name: t.produces for t in ws.list_transformers()}
    return [r for r in ws.list_runs()
            if r.project in writable and r.steps
            and r.status in (RunStatus.succeeded, RunStatus.degraded)
            and produces.get(r.steps[-1].transformer) in _INSTALLER_VALUES][:limit]


def _fleet_page(request: Request, viewer: Viewer, studio: StudioDep, *,
                enroll_form: dict[str, Any] | None = None,
                deploy_form: dict[str, Any] | None = None,
                enrolled: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                status_code: int = 200) -> Response:
    fleet = _fleet(viewer, studio)
    ws = viewer.workspace
    projects = {p.id: p for p in ws.list_projects()}
    devices = fleet.devices()
    groups = sorted({g for d in devices for g in d.groups})
    rollouts = fleet.rollouts()
    writable = _writable(viewer)
    can_write = {p.id for p in writable}
    return render(request, "fleet.html", {
        "devices": devices, "health": {d.id: device_health(d) for d in devices},
        "rollouts": rollouts, "actions": ROLLOUT_ACTIONS, "verbs": _VERBS,
        "projects": projects, "writable": writable, "groups": groups,
        "can_write": can_write,
        "profiles": studio.services.list_devices(ws.projects),
        "runs": deployable_runs(viewer, can_write),
        "enroll_form": enroll_form or {"project": ws.user.default_project},
        "deploy_form": deploy_form or {"waves": "100"},
        "enrolled": enrolled, "errors": errors or {},
        "deployed": request.query_params.get("deployed")},
        viewer=viewer, status_code=status_code)


@router.get("/fleet")
def fleet_page(request: Request, viewer: WebSession, studio: StudioDep) -> Response:
    return _fleet_page(request, viewer, studio)


def _keep_project_404(exc: TinymlaasError) -> None:
    """Another user's project is a 404 page, not a form message."""
    if isinstance(exc, NotFoundError) and (exc.details or {}).get("kind") == "project":
        raise exc


@router.post("/fleet/devices")
def enroll(request: Request, viewer: WebSession, studio: StudioDep,
           name: Annotated[str, Form(max_length=200)] = "",
           group: Annotated[str, Form(max_length=200)] = "",
           profile: Annotated[str, Form(max_length=200)] = "",
           project: Annotated[str, Form(max_length=100)] = "",
           csrf_token: Annotated[str, Form()] = "") -> Response:
    """Add a device; the page answers with its one-time enrollment code, shown this once
    (it is stored only as a hash)."""
    check_csrf(request, csrf_token)
    form = {"name": name, "group": group, "profile": profile, "project": project}
    try:
        if not name.strip():
            raise InvalidInputError("give the device a name")
        groups = [g.strip() for g in group.split(",") if g.strip()]
        device, code = _fleet(viewer, studio).enroll(
            name.strip(), groups=groups, profile=profile or None, project=project or None)
    except TinymlaasError as exc:
        _keep_project_404(exc)
        return _fleet_page(request, viewer, studio, enroll_form=form,
                           errors={"enroll": exc.message}, status_code=exc.http_status)
    return _fleet_page(request, viewer, studio, enrolled=_enrolled(request, device.name, code),
                       status_code=201)


def _enrolled(request: Request, name: str, code: str) -> dict[str, Any]:
    """What the page shows once: the code and the agent's command line for this server."""
    server = str(request.base_url).rstrip("/")
    return {"name": name, "code": code, "hours": int(CODE_TTL.total_seconds() // 3600),
            "command": f"tinymlaas agent --server {server} --token {code} "
                       "--root /var/lib/tinymlaas-agent"}


def _number(text: str, what: str, *, low: float = 0.0, high: float = 1e7,
            zero: bool = False) -> float | None:
    """An optional number typed in a form, within bounds (``zero``: ``low`` itself is
    allowed)."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"{what} must be a number, not {text!r}") from None
    if not (low <= value if zero else low < value) or not value <= high:
        raise InvalidInputError(f"{what} must be {'from' if zero else 'above'} {low:g} "
                                f"to {high:g}")
    return value


def _waves(text: str) -> list[int]:
    """"10,100" -> [10, 100], checked before anything is released."""
    try:
        return check_waves([int(w) for w in text.replace(" ", "").split(",") if w])
    except ValueError:
        raise InvalidInputError("waves are percentages separated by commas, e.g. 10,100; "
                                f"got {text!r}") from None


@router.post("/fleet/rollouts")
def deploy(request: Request, viewer: WebSession, studio: StudioDep,
           run: Annotated[str, Form(max_length=100)] = "",
           group: Annotated[str, Form(max_length=200)] = "",
           waves: Annotated[str, Form(max_length=100)] = "100",
           error_threshold: Annotated[str, Form(max_length=20)] = "",
           max_latency_ms: Annotated[str, Form(max_length=40)] = "",
           csrf_token: Annotated[str, Form()] = "") -> Response:
    """Release the run's installer output (signed, with its golden input) and offer it to
    the group in waves."""
    check_csrf(request, csrf_token)
    form = {"run": run, "group": group, "waves": waves, "error_threshold": error_threshold,
            "max_latency_ms": max_latency_ms}
    try:
        if not run:
            raise InvalidInputError("pick the run to deploy (one whose pipeline ends in an "
                                    "installer)")
        if not group.strip():
            raise InvalidInputError("give the group of devices to deploy to")
        threshold = _number(error_threshold, "the failure threshold (%)", high=100,
                            zero=True)
        rollout = _fleet(viewer, studio).deploy(
            group.strip(), run=run, waves=_waves(waves),
            error_threshold=0.2 if threshold is None else threshold / 100,
            max_latency_ms=_number(max_latency_ms, "the latency limit (ms)"))
    except TinymlaasError as exc:
        _keep_project_404(exc)
        return _fleet_page(request, viewer, studio, deploy_form=form,
                           errors={"deploy": exc.message}, status_code=exc.http_status)
    return RedirectResponse(f"/fleet?deployed={rollout.id}#rollout-{rollout.id}",
                            status_code=303)


@router.post("/fleet/rollouts/{ref}/{action}")
def rollout_action(request: Request, ref: str, action: str, viewer: WebSession,
                   studio: StudioDep, csrf_token: Annotated[str, Form()] = "") -> Response:
    """Pause, resume, cancel or roll back (a new rollout of the group's previous release)."""
    check_csrf(request, csrf_token)
    if action not in _VERBS:
        raise NotFoundError(f"no rollout action {action!r}")
    fleet = _fleet(viewer, studio)
    rollout = fleet.rollout(ref, write=True)
    try:
        result = getattr(fleet.fleet, action)(rollout)
    except TinymlaasError as exc:
        return _fleet_page(request, viewer, studio, errors={"rollouts": exc.message},
                           status_code=exc.http_status)
    return RedirectResponse(f"/fleet?done={action}#rollout-{result.id}", status_code=303)


def _device_page(request: Request, viewer: Viewer, studio: StudioDep, ref: str, *,
                 form: dict[str, Any] | None = None, error: str | None = None,
                 enrolled: dict[str, Any] | None = None,
                 status_code: int = 200) -> Response:
    fleet = _fleet(viewer, studio)
    ws = viewer.workspace
    device = fleet.device(ref)
    release = fleet.installed(device)
    jobs = studio.fleet.jobs(device)
    datasets = {d.id: d for d in ws.list_datasets(device.project)}
    return render(request, "fleet_device.html", {
        "device": device, "health": device_health(device), "release": release,
        "project": ws.get_project(device.project),
        "history": studio.fleet.history(device), "jobs": jobs, "datasets": datasets,
        "can_write": ws.roles.get(device.project) in {"owner", "editor"},
        "max_samples": MAX_INFERENCE_SAMPLES,
        "form": form or {"limit": "100"}, "error": error, "enrolled": enrolled,
        "queued": request.query_params.get("queued")},
        viewer=viewer, status_code=status_code)


@router.get("/fleet/devices/{ref}")
def device_page(request: Request, ref: str, viewer: WebSession,
                studio: StudioDep) -> Response:
    return _device_page(request, viewer, studio, ref)


@router.post("/fleet/devices/{ref}/revoke")
def revoke(request: Request, ref: str, viewer: WebSession, studio: StudioDep,
           csrf_token: Annotated[str, Form()] = "") -> Response:
    """The device's credential stops working; its pending updates are cancelled."""
    check_csrf(request, csrf_token)
    device = studio.fleet.revoke(_fleet(viewer, studio).device(ref, write=True))
    return RedirectResponse(f"/fleet/devices/{device.id}", status_code=303)


@router.post("/fleet/devices/{ref}/enrollment-code")
def renew_code(request: Request, ref: str, viewer: WebSession, studio: StudioDep,
               csrf_token: Annotated[str, Form()] = "") -> Response:
    """A new one-time enrollment code, shown this once; the device's current credential
    stops working (a lost code, a device wiped, or a revoked one brought back)."""
    check_csrf(request, csrf_token)
    device = _fleet(viewer, studio).device(ref, write=True)
    code = studio.fleet.renew_code(device)
    return _device_page(request, viewer, studio, device.id,
                        enrolled=_enrolled(request, device.name, code))


@router.post("/fleet/devices/{ref}/inference")
def inference(request: Request, ref: str, viewer: WebSession, studio: StudioDep,
              dataset: Annotated[str, Form(max_length=100)] = "",
              limit: Annotated[str, Form(max_length=20)] = "100",
              csrf_token: Annotated[str, Form()] = "") -> Response:
    """Queue the dataset's test split for the device's agent, which runs it on the
    installed release and reports outputs and latency measured on the device."""
    check_csrf(request, csrf_token)
    fleet = _fleet(viewer, studio)
    device = fleet.device(ref)
    form = {"dataset": dataset, "limit": limit}
    try:
        if not dataset:
            raise InvalidInputError("pick the dataset whose test split the device runs")
        try:
            count = int(limit.strip() or "100")
        except ValueError:
            raise InvalidInputError(f"samples must be a whole number, not {limit!r}") from None
        job = fleet.inference(device.id, dataset, count)
    except TinymlaasError as exc:
        return _device_page(request, viewer, studio, device.id, form=form, error=exc.message,
                            status_code=exc.http_status)
    return RedirectResponse(f"/fleet/devices/{device.id}?queued={job.id}#job-{job.id}",
                            status_code=303)
