"""The device-facing API, after hawkBit's Direct Device Integration (DDI) resource model.

Mounted at ``/ddi``: ``/ddi/{tenant}/controller/v1/{controllerId}`` and below, the tenant
being the project id and the controller id the device id. Devices send
``Authorization: TargetToken <credential>`` (the credential of ``POST /ddi/enroll``) and
see only their own actions, releases and inference jobs; anything else is a 404.
``docs/ota.md`` lists where this differs from hawkBit.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from tinymlaas.api.common import errors
from tinymlaas.api.deps import StudioDep
from tinymlaas.contracts.ota import (
    ActionHistory,
    ControllerBase,
    ControllerConfig,
    DdiArtifact,
    DdiChunk,
    DdiDeployment,
    DdiHashes,
    DeploymentBase,
    Enrollment,
    EnrollRequest,
    Feedback,
    Href,
    PollingConfig,
    ReleaseManifest,
)
from tinymlaas.domain.fleet import FleetDevice
from tinymlaas.errors import AuthenticationError, InvalidInputError
from tinymlaas.service.fleet import MAX_INFERENCE_SAMPLES, MAX_RESULT_BYTES, POLL_S

__all__ = ["router"]

router = APIRouter(prefix="/ddi", tags=["devices (DDI)"],
                   responses=errors(400, 401, 404, 409, 413, 422, 500))

_target_token = APIKeyHeader(name="Authorization", auto_error=False, scheme_name="TargetToken",
                             description="`TargetToken <device credential>`")
_BASE = "/{tenant}/controller/v1/{controller_id}"


async def get_device(request: Request, tenant: str, controller_id: str,
                     header: Annotated[str | None, Depends(_target_token)],
                     studio: StudioDep) -> FleetDevice:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "targettoken" or not token.strip():
        raise AuthenticationError("send 'Authorization: TargetToken <device credential>'")
    return await run_in_threadpool(studio.fleet.authenticate, token.strip(), tenant,
                                   controller_id)


DeviceDep = Annotated[FleetDevice, Depends(get_device)]


def _link(request: Request, device: FleetDevice, *parts: str) -> Href:
    base = str(request.base_url).rstrip("/")
    return Href(href="/".join([f"{base}/ddi/{device.project}/controller/v1/{device.id}",
                               *parts]))


def _sleep(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@router.post("/enroll", response_model=Enrollment, status_code=status.HTTP_201_CREATED)
def enroll(body: EnrollRequest, studio: StudioDep) -> object:
    """Trade a one-time enrollment code for the device's credential and the project's
    release key (the trust anchor the device keeps)."""
    return studio.fleet.exchange(body.code)


@router.get(_BASE, response_model=ControllerBase, response_model_by_alias=True,
            response_model_exclude_none=True)
def controller_base(request: Request, device: DeviceDep, studio: StudioDep) -> object:
    """Poll: when to come back, and links to the device's work (``deploymentBase``; our
    ``inference``)."""
    action, job = studio.fleet.poll(device)
    links = {}
    if action is not None:
        links["deploymentBase"] = _link(request, device, "deploymentBase", action.id)
    if job is not None:
        links["inference"] = _link(request, device, "inference", job.id)
    return ControllerBase(config=ControllerConfig(polling=PollingConfig(sleep=_sleep(POLL_S))),
                          links=links)


@router.get(_BASE + "/deploymentBase/{action_id}", response_model=DeploymentBase,
            response_model_by_alias=True, response_model_exclude_none=True)
def deployment_base(request: Request, action_id: str, device: DeviceDep,
                    studio: StudioDep) -> object:
    """One chunk (``part: model``): the signed manifest, this device's signed ticket and
    the release's files, each with its sha256, size and download link."""
    action, release = studio.fleet.deployment(device, action_id)
    manifest = ReleaseManifest.model_validate(release.manifest["signed"])
    files = [(name, *studio.fleet.release_file(device, release.id, name))
             for name in ("manifest.json", "ticket.json")]
    listed = [(name, sha, len(data)) for name, data, sha in files if isinstance(data, bytes)]
    listed += [(f.name, f.sha256, f.size) for f in manifest.files]
    artifacts = [DdiArtifact(filename=name, hashes=DdiHashes(sha256=sha), size=size, links={
        "download-http": _link(request, device, "softwaremodules", release.id, "artifacts",
                               name)}) for name, sha, size in listed]
    return DeploymentBase(
        id=action.id,
        deployment=DdiDeployment(chunks=[DdiChunk(part="model", version=str(release.version),
                                                  name=release.name, artifacts=artifacts)]),
        action_history=ActionHistory(status=action.state.value,
                                     messages=[action.message] if action.message else []))


@router.post(_BASE + "/deploymentBase/{action_id}/feedback")
def deployment_feedback(action_id: str, body: Feedback, device: DeviceDep,
                        studio: StudioDep) -> dict[str, str]:
    """The device's progress and outcome (DDI ``status``; our ``status.tinymlaas`` adds the
    stage, slot and version)."""
    action = studio.fleet.feedback(device, action_id, body)
    return {"id": action.id, "state": action.state.value}


@router.get(_BASE + "/softwaremodules/{release_id}/artifacts/{filename}",
            response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {
                "description": "The requested byte range (Range: bytes=N-)"}})
def download_artifact(release_id: str, filename: str, device: DeviceDep,
                      studio: StudioDep) -> Response:
    """A file of a release offered to this device; ``Range`` resumes a download."""
    data, sha = studio.fleet.release_file(device, release_id, filename)
    headers = {"ETag": f'"{sha}"', "X-Checksum-Sha256": sha}
    if isinstance(data, Path):
        return FileResponse(data, media_type="application/octet-stream", filename=filename,
                            headers=headers)
    return Response(data, media_type="application/json", headers=headers)


class InferenceWork(BaseModel):
    id: str
    samples: int
    inputs: DdiArtifact


class InferenceResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_ms: list[float] = Field(max_length=MAX_INFERENCE_SAMPLES,
                                    description="Per sample, measured on the device")
    outputs: str = Field(max_length=MAX_RESULT_BYTES * 4 // 3 + 4,
                         description="Base64 of an NPZ with output/0, output/1, ...")


@router.get(_BASE + "/inference/{job_id}", response_model=InferenceWork,
            response_model_by_alias=True, response_model_exclude_none=True)
def inference_job(request: Request, job_id: str, device: DeviceDep,
                  studio: StudioDep) -> object:
    """Inputs the Studio asked this device to run on its installed release."""
    job, inputs = studio.fleet.take_job(device, job_id)
    size = inputs.stat().st_size
    return InferenceWork(id=job.id, samples=job.samples, inputs=DdiArtifact(
        filename="inputs.npz", hashes=DdiHashes(sha256=job.inputs_sha), size=size,
        links={"download-http": _link(request, device, "inference", job.id, "inputs.npz")}))


@router.get(_BASE + "/inference/{job_id}/inputs.npz", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def inference_inputs(job_id: str, device: DeviceDep, studio: StudioDep) -> Response:
    return FileResponse(studio.fleet.inputs_of(device, job_id),
                        media_type="application/octet-stream", filename="inputs.npz")


@router.post(_BASE + "/inference/{job_id}/result")
def inference_result(job_id: str, body: InferenceResult, device: DeviceDep,
                     studio: StudioDep) -> dict[str, object]:
    """Outputs and per-sample latency measured on the device."""
    try:
        outputs = base64.b64decode(body.outputs, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("outputs must be base64") from None
    job = studio.fleet.inference_result(device, job_id, body.latency_ms, outputs)
    return {"id": job.id, "state": job.state, "metrics": job.metrics}
