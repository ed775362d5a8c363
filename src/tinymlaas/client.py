"""``tinymlaas.Client``: a typed Python SDK for the Studio HTTP API (httpx, synchronous).

::

    from tinymlaas import Client

    with Client("http://127.0.0.1:8000", token="tmls_...") as studio:
        model = studio.upload_model("cnn.onnx")
        data = studio.add_builtin_dataset("digits")
        run = studio.create_run(model.id, data.id, template="static-int8")
        run = studio.follow(run.id, on_event=print)    # live progress until it ends
        studio.download_output(run.id, "optimized.onnx")

Responses are the API's own schemas (:mod:`tinymlaas.api.schemas`); error responses raise
the matching :class:`~tinymlaas.errors.TinymlaasError` subclass, carrying the server's
message and details. Pass ``http=`` to use any ``httpx.Client`` (e.g. FastAPI's
``TestClient``, or one with ``httpx.MockTransport``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from tinymlaas import errors
from tinymlaas.api.fleet_schemas import DeviceDetail, DeviceEnrollment
from tinymlaas.api.schemas import (
    ArtifactPublic,
    ComparisonPublic,
    DatasetPublic,
    DeletionPublic,
    DevicePublic,
    LayerPublic,
    LoginResponse,
    MemberPublic,
    ModelPublic,
    ProjectPublic,
    RegistrationResponse,
    RunEventPublic,
    RunMetrics,
    RunPublic,
    SigningKeyPublic,
    StepLogPublic,
    TemplatePublic,
    TokenCreated,
    TokenPublic,
    TransformerPublic,
    UserPublic,
    WebhookCreated,
    WebhookPublic,
)
from tinymlaas.api.search_schemas import SearchEventPublic, SearchPublic
from tinymlaas.api.site_schemas import BlobUrl, Site, SiteCreated, SiteWorker
from tinymlaas.domain.fleet import FleetDevice, InferenceJob, Release, Rollout
from tinymlaas.domain.searches import Candidate

__all__ = ["Client"]

T = TypeVar("T", bound=BaseModel)
API = "/api/v1"
_CHUNK = 1 << 20


def _error_classes() -> dict[str, type[errors.TinymlaasError]]:
    classes = [getattr(errors, name) for name in errors.__all__]
    table: dict[str, type[errors.TinymlaasError]] = {cls.code: cls for cls in classes}
    table["validation_error"] = errors.InvalidInputError
    return table


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = json.loads(response.read())
        code, message, details = body["code"], body["message"], body.get("details") or {}
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", response.text[:500] or response.reason_phrase, {}
    cls = _error_classes().get(code)
    if cls is None:
        cls = {401: errors.AuthenticationError, 404: errors.NotFoundError,
               409: errors.ConflictError, 413: errors.PayloadTooLargeError,
               429: errors.RateLimitedError, 503: errors.ServiceUnavailableError,
               }.get(response.status_code, errors.TinymlaasError)
    raise cls(message, {**details, "http_status": response.status_code})


@contextmanager
def _reachable(url: object) -> Iterator[None]:
    """Turn a failure to reach the server (refused, unknown host, timeout, dropped
    connection) into a ``ServiceUnavailableError`` naming the server."""
    url = str(url).rstrip("/")
    try:
        yield
    except httpx.TimeoutException:
        raise errors.ServiceUnavailableError(
            f"the tinymlaas server at {url} did not answer in time; check that it is "
            "running and reachable (--server or TINYMLAAS_SERVER)", {"server": url}
        ) from None
    except httpx.TransportError as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise errors.ServiceUnavailableError(
            f"cannot reach the tinymlaas server at {url} ({reason}); check that it is "
            "running and the address (--server or TINYMLAAS_SERVER)",
            {"server": url, "reason": reason}) from None


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def _external_data_files(model: Path) -> list[Path]:
    """The external-data files an ONNX model references, next to it; none for other files
    (or ones the server will refuse anyway, with its own message).

    Reading them needs the ``onnx`` package, which the plain SDK install does not bring:
    without it the model file is uploaded alone, and the server refuses a model whose
    external data did not come with it (install ``onnx`` to upload such models)."""
    if model.suffix.lower() != ".onnx" or not model.is_file():
        return []
    try:
        from tinymlaas.formats.models import external_data_locations
    except ModuleNotFoundError:
        return []

    try:
        locations = external_data_locations(model)
    except errors.UnsupportedModelError:
        return []
    files = []
    for location in sorted(locations):
        if "/" in location:
            raise errors.InvalidInputError(
                f"{model.name} keeps external data in a subfolder ({location!r}); the server "
                "takes external-data files next to the model: save it again with "
                "onnx.save_model(..., location='<file name>')")
        path = model.parent / location
        if not path.is_file():
            raise errors.InvalidInputError(f"external data {location!r} of {model.name} is "
                                           f"missing next to it in {model.parent}")
        files.append(path)
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


#: Items per page the list methods ask for (the server's most).
PAGE_LIMIT = 500


def _next_cursor(response: httpx.Response) -> str | None:
    """The ``cursor`` of the next page, from the ``Link`` header; None on the last page."""
    url = response.links.get("next", {}).get("url")
    if not url:
        return None
    return httpx.URL(url).params.get("cursor")


class Client:
    """A connection to a tinymlaas server.

    The ``list_*`` methods return every item, following the API's pages; :meth:`pages`
    yields them a page at a time.

    Args:
        base_url: The server (default: ``$TINYMLAAS_SERVER``), e.g. ``http://host:8000``.
        token: An API or log-in token (default: ``$TINYMLAAS_TOKEN``).
        timeout: Seconds per request (event streams wait as long as the run takes).
        http: An existing ``httpx.Client`` to send requests with.
    """

    def __init__(self, base_url: str | None = None, token: str | None = None, *,
                 timeout: float = 120.0, http: httpx.Client | None = None) -> None:
        base_url = base_url or os.environ.get("TINYMLAAS_SERVER")
        if http is None and not base_url:
            raise errors.InvalidInputError("give the server URL (or set TINYMLAAS_SERVER)")
        self.token = token if token is not None else os.environ.get("TINYMLAAS_TOKEN")
        self._http = http or httpx.Client(base_url=base_url or "", timeout=timeout)
        self._owns_http = http is None

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # plumbing -----------------------------------------------------------------------------

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**headers, **(extra or {})}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request to ``/api/v1{path}``; error responses raise."""
        headers = self._headers(kwargs.pop("headers", None))
        if "params" in kwargs:
            kwargs["params"] = {k: v for k, v in kwargs["params"].items() if v is not None}
        with _reachable(self._http.base_url):
            response = self._http.request(method, API + path, headers=headers, **kwargs)
        _raise_for_error(response)
        return response

    def _one(self, model: type[T], method: str, path: str, **kwargs: Any) -> T:
        return model.model_validate(self.request(method, path, **kwargs).json())

    def pages(self, model: type[T], path: str, params: dict[str, Any] | None = None, *,
              limit: int = PAGE_LIMIT) -> Iterator[list[T]]:
        """The pages of a list endpoint (``limit`` items each), following each response's
        ``Link: <...>; rel="next"`` header until the last page::

            for page in studio.pages(RunPublic, "/runs", {"status": "succeeded"}):
                ...
        """
        adapter = TypeAdapter(list[model])  # type: ignore[valid-type]
        query: dict[str, Any] = {**(params or {}), "limit": limit}
        while True:
            response = self.request("GET", path, params=query)
            yield adapter.validate_python(response.json())
            cursor = _next_cursor(response)
            if cursor is None:
                return
            query = {**query, "cursor": cursor}

    def _many(self, model: type[T], path: str, **kwargs: Any) -> list[T]:
        """Every item of a list endpoint: all its pages."""
        return [item for page in self.pages(model, path, kwargs.get("params"))
                for item in page]

    def _download(self, path: str, dest: Path | str) -> Path:
        dest = Path(dest)
        with _reachable(self._http.base_url), \
                self._http.stream("GET", API + path, headers=self._headers()) as response:
            _raise_for_error(response)
            if dest.is_dir():
                dest = dest / _attachment_name(response, "download")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.part")
            with tmp.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
            tmp.replace(dest)
        return dest

    def _upload(self, model: type[T], path: str, file: Path | str,
                params: dict[str, Any]) -> T:
        file = Path(file)
        if not file.is_file():
            raise errors.InvalidInputError(f"{file} does not exist")
        headers = {"Content-Type": "application/octet-stream",
                   "X-Content-SHA256": _sha256(file)}
        return self._one(model, "POST", path, params={**params, "filename": file.name},
                         content=_file_chunks(file), headers=headers)

    # health and accounts ------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health").json()

    def register(self, email: str, password: str, name: str = "") -> RegistrationResponse:
        """Create an account; the answer does not say whether the address had one already
        (log in to find out)."""
        return self._one(RegistrationResponse, "POST", "/auth/register",
                         json={"email": email, "password": password, "name": name})

    def login(self, email: str, password: str) -> LoginResponse:
        """Log in; the client uses the returned token from now on."""
        response = self._one(LoginResponse, "POST", "/auth/login",
                             json={"email": email, "password": password})
        self.token = response.access_token
        return response

    def me(self) -> UserPublic:
        return self._one(UserPublic, "GET", "/users/me")

    def create_token(self, name: str = "api") -> TokenCreated:
        return self._one(TokenCreated, "POST", "/users/me/tokens", json={"name": name})

    def list_tokens(self) -> list[TokenPublic]:
        return self._many(TokenPublic, "/users/me/tokens")

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/users/me/tokens/{token_id}")

    # projects -----------------------------------------------------------------------------

    def create_project(self, name: str) -> ProjectPublic:
        return self._one(ProjectPublic, "POST", "/projects", json={"name": name})

    def list_projects(self) -> list[ProjectPublic]:
        return self._many(ProjectPublic, "/projects")

    def get_project(self, project_id: str) -> ProjectPublic:
        return self._one(ProjectPublic, "GET", f"/projects/{project_id}")

    def share_project(self, project_id: str, email: str, role: str = "editor") -> MemberPublic:
        return self._one(MemberPublic, "POST", f"/projects/{project_id}/members",
                         json={"email": email, "role": role})

    def list_members(self, project_id: str) -> list[MemberPublic]:
        return self._many(MemberPublic, f"/projects/{project_id}/members")

    def unshare_project(self, project_id: str, user_id: str) -> None:
        self.request("DELETE", f"/projects/{project_id}/members/{user_id}")

    # the fleet (over-the-air) ----------------------------------------------------------

    def enroll_device(self, name: str, *, groups: list[str] | None = None,
                      profile: str | None = None, tags: dict[str, str] | None = None,
                      project: str | None = None) -> DeviceEnrollment:
        """Add a device; the answer holds its one-time ``enrollment_code`` for the agent."""
        body = {"name": name, "groups": groups or [], "profile": profile, "tags": tags or {},
                "project": project}
        return self._one(DeviceEnrollment, "POST", "/fleet/devices",
                         json={k: v for k, v in body.items() if v is not None})

    def list_fleet(self, project: str | None = None,
                   group: str | None = None) -> list[FleetDevice]:
        return self._list(FleetDevice, "/fleet/devices", {"project": project, "group": group})

    def fleet_device(self, ref: str) -> DeviceDetail:
        return self._one(DeviceDetail, "GET", f"/fleet/devices/{ref}")

    def revoke_device(self, ref: str) -> FleetDevice:
        return self._one(FleetDevice, "POST", f"/fleet/devices/{ref}/revoke")

    def renew_enrollment(self, ref: str) -> DeviceEnrollment:
        return self._one(DeviceEnrollment, "POST", f"/fleet/devices/{ref}/enrollment-code")

    def create_release(self, run: str, **options: Any) -> Release:
        """A signed release of a finished run's installer output (``name``, ``atol``,
        ``rtol``, ``max_latency_ms``)."""
        return self._one(Release, "POST", "/fleet/releases",
                         json={"run": run, **{k: v for k, v in options.items() if v is not None}})

    def list_releases(self, project: str | None = None) -> list[Release]:
        return self._list(Release, "/fleet/releases", {"project": project})

    def deploy(self, group: str, *, run: str | None = None, release: str | None = None,
               waves: list[int] | None = None, error_threshold: float | None = None,
               **options: Any) -> Rollout:
        """Roll a release (or a run, released first) out to ``group`` in ``waves``."""
        body = {"group": group, "run": run, "release": release, "waves": waves,
                "error_threshold": error_threshold, **options}
        return self._one(Rollout, "POST", "/fleet/rollouts",
                         json={k: v for k, v in body.items() if v is not None})

    def rollout(self, ref: str) -> Rollout:
        return self._one(Rollout, "GET", f"/fleet/rollouts/{ref}")

    def list_rollouts(self, project: str | None = None) -> list[Rollout]:
        return self._list(Rollout, "/fleet/rollouts", {"project": project})

    def rollout_action(self, ref: str, action: str) -> Rollout:
        """``pause``, ``resume``, ``cancel`` or ``rollback`` (which returns the new rollout)."""
        return self._one(Rollout, "POST", f"/fleet/rollouts/{ref}/{action}")

    def request_inference(self, device: str, dataset: str | None = None, limit: int = 100, *,
                          samples: Path | str | None = None) -> InferenceJob:
        """Run a dataset's test split, or the arrays of an NPZ file (``samples``), on the
        device's installed release."""
        if samples is not None:
            with Path(samples).open("rb") as fh:
                return self._one(InferenceJob, "POST",
                                 f"/fleet/devices/{device}/inference/samples",
                                 files={"file": (Path(samples).name, fh,
                                                 "application/octet-stream")},
                                 data={"limit": str(limit)})
        return self._one(InferenceJob, "POST", f"/fleet/devices/{device}/inference",
                         json={"dataset": dataset, "limit": limit})

    def inference_job(self, job_id: str) -> InferenceJob:
        return self._one(InferenceJob, "GET", f"/fleet/inference/{job_id}")

    # sites (steps on the customer's machines) -------------------------------------------

    def create_site(self, name: str, *, project: str | None = None) -> SiteCreated:
        """A new site; the answer holds its ``token`` (shown once) for the site's workers."""
        body = {"name": name, "project": project}
        return self._one(SiteCreated, "POST", "/sites",
                         json={k: v for k, v in body.items() if v is not None})

    def list_sites(self, project: str | None = None) -> list[Site]:
        return self._list(Site, "/sites", {"project": project})

    def get_site(self, name: str, *, project: str | None = None) -> Site:
        return self._one(Site, "GET", f"/sites/{name}",
                         params={"project": project})

    def delete_site(self, name: str, *, project: str | None = None) -> None:
        self.request("DELETE", f"/sites/{name}", params={"project": project})

    def site_heartbeat(self, site: str, worker_id: str, hostname: str,
                       running_steps: list[str] | None = None) -> SiteWorker:
        """(A site worker, with the site's token.) Say the worker is alive."""
        return self._one(SiteWorker, "POST", f"/sites/{site}/heartbeat",
                         json={"worker_id": worker_id, "hostname": hostname,
                               "running_steps": running_steps or []})

    def blob_upload_url(self, site: str, sha256: str, *, job_id: str, attempt: int,
                        worker_id: str, ttl_s: int = 3600) -> BlobUrl:
        """(A site worker, with the site's token.) A signed URL to PUT blob ``sha256`` to:
        the output of attempt ``attempt`` of job ``job_id``, which ``worker_id`` holds
        (one output per attempt)."""
        return self._one(BlobUrl, "POST", f"/sites/{site}/blob-urls",
                         json={"sha256": sha256, "method": "PUT", "ttl_s": ttl_s,
                               "job_id": job_id, "attempt": attempt,
                               "worker_id": worker_id})

    def _list(self, model: type[T], path: str, params: dict[str, Any]) -> list[T]:
        return self._many(model, path, params={k: v for k, v in params.items()
                                               if v is not None})

    def signing_key(self, project_id: str) -> SigningKeyPublic:
        """The public key the project's firmware is signed with."""
        return self._one(SigningKeyPublic, "GET", f"/projects/{project_id}/signing-key")

    def rotate_signing_key(self, project_id: str) -> SigningKeyPublic:
        """A new signing key for the project (owner only); the old one is retired."""
        return self._one(SigningKeyPublic, "POST", f"/projects/{project_id}/signing-key/rotate")

    # models -------------------------------------------------------------------------------

    def upload_model(self, path: Path | str, *, name: str | None = None,
                     project: str | None = None, task: str = "classification",
                     input_shape: list[int] | None = None, description: str = "") -> ModelPublic:
        """Stream a model file to the server and register it; the external-data files an
        ONNX model references (``model.onnx.data`` next to it) go along."""
        params = {"name": name, "project": project, "task": task, "input_shape": input_shape,
                  "description": description}
        path = Path(path)
        if not (sidecars := _external_data_files(path)):
            return self._upload(ModelPublic, "/models", path, params)
        with ExitStack() as stack:  # httpx streams the open files in chunks
            files = [("file", (path.name, stack.enter_context(path.open("rb"))))]
            files += [("external_data", (f.name, stack.enter_context(f.open("rb"))))
                      for f in sidecars]
            return self._one(ModelPublic, "POST", "/models", params=params, files=files,
                             data={"sha256": _sha256(path)})

    def import_model(self, repo_id: str, filename: str | None = None, *,
                     revision: str | None = None, name: str | None = None,
                     project: str | None = None, task: str | None = None,
                     input_shape: list[int] | None = None,
                     description: str = "") -> ModelPublic:
        """Register a model file from a Hugging Face repo, or without ``filename`` the whole
        model repo exported to ONNX with its tokenizer."""
        body = {"repo_id": repo_id, "filename": filename, "revision": revision, "name": name,
                "project": project, "task": task, "input_shape": input_shape,
                "description": description}
        return self._one(ModelPublic, "POST", "/models/hub", json=body)

    def list_models(self, project: str | None = None) -> list[ModelPublic]:
        return self._many(ModelPublic, "/models", params={"project": project})

    def get_model(self, ref: str) -> ModelPublic:
        return self._one(ModelPublic, "GET", f"/models/{ref}")

    def download_model(self, ref: str, dest: Path | str) -> Path:
        return self._download(f"/models/{ref}/file", dest)

    # datasets -----------------------------------------------------------------------------

    def upload_dataset(self, path: Path | str, *, name: str | None = None,
                       project: str | None = None, task: str | None = None,
                       label_column: str | None = None,
                       image_size: tuple[int, int] | None = None, test_fraction: float = 0.2,
                       calibration_size: int = 256, seed: int = 0,
                       tokenizer: str | None = None, text_column: str = "text",
                       text_pair_column: str | None = None, max_length: int = 128,
                       padding: str = "max_length") -> DatasetPublic:
        """Stream an .npz, .csv or image .zip to the server and register it; with
        ``tokenizer`` (a model), a .csv or .jsonl of text tokenized with its tokenizer."""
        text = {"tokenizer": tokenizer, "text_column": text_column,
                "text_pair_column": text_pair_column, "max_length": max_length,
                "padding": padding} if tokenizer else {}
        return self._upload(DatasetPublic, "/datasets", path, {
            "name": name, "project": project, "task": task, "label_column": label_column,
            "image_width": image_size[0] if image_size else None,
            "image_height": image_size[1] if image_size else None,
            "test_fraction": test_fraction, "calibration_size": calibration_size, "seed": seed,
            **text})

    def add_builtin_dataset(self, source: str = "digits", *, name: str | None = None,
                            project: str | None = None, test_fraction: float = 0.2,
                            calibration_size: int = 256, seed: int = 0) -> DatasetPublic:
        return self._one(DatasetPublic, "POST", "/datasets/builtin", json={
            "source": source, "name": name, "project": project, "test_fraction": test_fraction,
            "calibration_size": calibration_size, "seed": seed})

    def add_site_dataset(self, source: str, *, name: str | None = None,
                         project: str | None = None, task: str | None = None,
                         label_column: str | None = None,
                         image_size: tuple[int, int] | None = None, test_fraction: float = 0.2,
                         calibration_size: int = 256, seed: int = 0) -> DatasetPublic:
        """Register a file that stays at a site (``site://NAME/relative/path``): the site's
        worker reads it and reports what it holds; runs on it run at that site."""
        return self._one(DatasetPublic, "POST", "/datasets/site", json={
            "source": source, "name": name, "project": project, "task": task,
            "label_column": label_column, "image_size": image_size,
            "test_fraction": test_fraction, "calibration_size": calibration_size,
            "seed": seed})

    def import_dataset(self, repo_id: str, filename: str, *, revision: str | None = None,
                       name: str | None = None, project: str | None = None,
                       task: str | None = None, label_column: str | None = None,
                       tokenizer: str | None = None, text_column: str = "text",
                       text_pair_column: str | None = None, max_length: int = 128,
                       padding: str = "max_length") -> DatasetPublic:
        """Register a dataset file from a Hugging Face dataset repo; with ``tokenizer`` (a
        model), a .csv or .jsonl of text tokenized with its tokenizer."""
        text = {"tokenizer": tokenizer, "text_column": text_column,
                "text_pair_column": text_pair_column, "max_length": max_length,
                "padding": padding} if tokenizer else {}
        return self._one(DatasetPublic, "POST", "/datasets/hub", json={
            "repo_id": repo_id, "filename": filename, "revision": revision, "name": name,
            "project": project, "task": task, "label_column": label_column, **text})

    def list_datasets(self, project: str | None = None) -> list[DatasetPublic]:
        return self._many(DatasetPublic, "/datasets", params={"project": project})

    def get_dataset(self, ref: str) -> DatasetPublic:
        return self._one(DatasetPublic, "GET", f"/datasets/{ref}")

    def download_dataset(self, ref: str, dest: Path | str) -> Path:
        return self._download(f"/datasets/{ref}/file", dest)

    # devices, transformers, templates -----------------------------------------------------

    def list_devices(self) -> list[DevicePublic]:
        return self._many(DevicePublic, "/devices")

    def get_device(self, name: str) -> DevicePublic:
        return self._one(DevicePublic, "GET", f"/devices/{name}")

    def add_device(self, **spec: Any) -> DevicePublic:
        """Register a custom device (fields of ``DeviceCreate``)."""
        return self._one(DevicePublic, "POST", "/devices", json=spec)

    def list_transformers(self) -> list[TransformerPublic]:
        return self._many(TransformerPublic, "/transformers")

    def get_transformer(self, name: str) -> TransformerPublic:
        return self._one(TransformerPublic, "GET", f"/transformers/{name}")

    def register_transformer(self, name: str, *, command: list[str] | None = None,
                             image: str | None = None, produces: str = "onnx",
                             config: dict[str, Any] | None = None,
                             env: dict[str, str] | None = None, summary: str = "",
                             project: str | None = None) -> TransformerPublic:
        """Register a command or container image as a named (external) transformer."""
        return self._one(TransformerPublic, "POST", "/transformers", json={
            "name": name, "command": command, "image": image, "produces": produces,
            "config": config or {}, "env": env or {}, "summary": summary, "project": project})

    def list_templates(self) -> list[TemplatePublic]:
        return self._many(TemplatePublic, "/templates")

    def get_template(self, name: str) -> TemplatePublic:
        return self._one(TemplatePublic, "GET", f"/templates/{name}")

    def create_template(self, name: str, pipeline: dict[str, Any], *, description: str = "",
                        project: str | None = None) -> TemplatePublic:
        return self._one(TemplatePublic, "POST", "/templates", json={
            "name": name, "pipeline": pipeline, "description": description,
            "project": project})

    # runs ---------------------------------------------------------------------------------

    def create_run(self, model: str, dataset: str | None = None, *,
                   pipeline: dict[str, Any] | None = None,
                   template: str | None = None, device: str | None = None,
                   name: str | None = None, project: str | None = None,
                   site: str | None = None) -> RunPublic:
        """Create and queue a run from an inline pipeline or a template (its steps at
        ``site``'s workers when given)."""
        body = {"model": model, "dataset": dataset, "pipeline": pipeline, "template": template,
                "device": device, "name": name, "project": project, "site": site}
        return self._one(RunPublic, "POST", "/runs",
                         json={k: v for k, v in body.items() if v is not None})

    def list_runs(self, project: str | None = None, status: str | None = None
                  ) -> list[RunPublic]:
        return self._many(RunPublic, "/runs", params={"project": project, "status": status})

    def get_run(self, ref: str) -> RunPublic:
        return self._one(RunPublic, "GET", f"/runs/{ref}")

    def submit_run(self, ref: str) -> RunPublic:
        return self._one(RunPublic, "POST", f"/runs/{ref}/submit")

    def cancel_run(self, ref: str) -> RunPublic:
        return self._one(RunPublic, "POST", f"/runs/{ref}/cancel")

    def rerun(self, ref: str) -> RunPublic:
        return self._one(RunPublic, "POST", f"/runs/{ref}/rerun")

    # deleting -----------------------------------------------------------------------------

    def delete_run(self, ref: str) -> DeletionPublic:
        """Delete a finished run; the artifacts only it used are freed."""
        return self._one(DeletionPublic, "DELETE", f"/runs/{ref}")

    def delete_model(self, ref: str, *, force: bool = False) -> DeletionPublic:
        """Delete a model (with ``force``, also the runs that start from it)."""
        return self._one(DeletionPublic, "DELETE", f"/models/{ref}",
                         params={"force": "true"} if force else None)

    def delete_dataset(self, ref: str, *, force: bool = False) -> DeletionPublic:
        """Delete a dataset (with ``force``, also the runs that use it)."""
        return self._one(DeletionPublic, "DELETE", f"/datasets/{ref}",
                         params={"force": "true"} if force else None)

    def delete_project(self, project_id: str) -> DeletionPublic:
        """Delete a project and everything in it (owner only)."""
        return self._one(DeletionPublic, "DELETE", f"/projects/{project_id}")

    def run_logs(self, ref: str) -> list[StepLogPublic]:
        return self._many(StepLogPublic, f"/runs/{ref}/logs")

    def step_log(self, ref: str, index: int) -> str:
        return self.request("GET", f"/runs/{ref}/steps/{index}/log").text

    def run_metrics(self, ref: str) -> RunMetrics:
        return self._one(RunMetrics, "GET", f"/runs/{ref}/metrics")

    def run_layers(self, ref: str) -> list[LayerPublic]:
        """The compiler's per-layer profile of the run's model, one row per kernel call (all
        pages); :class:`~tinymlaas.errors.ConflictError` when the run has none."""
        return self._many(LayerPublic, f"/runs/{ref}/layers")

    def compare(self, runs: list[str], reference: str | None = None) -> list[ComparisonPublic]:
        response = self.request("POST", "/runs/compare",
                                json={"runs": runs, "reference": reference})
        return TypeAdapter(list[ComparisonPublic]).validate_python(response.json())

    def run_artifacts(self, ref: str) -> list[ArtifactPublic]:
        return self._many(ArtifactPublic, f"/runs/{ref}/artifacts")

    def download_artifact(self, ref: str, sha: str, dest: Path | str) -> Path:
        return self._download(f"/runs/{ref}/artifacts/{sha}", dest)

    def download_output(self, ref: str, dest: Path | str) -> Path:
        """The run's output; ``dest`` may be a directory (the server's file name is used)."""
        return self._download(f"/runs/{ref}/output", dest)

    def export_run(self, ref: str, dest: Path | str) -> Path:
        """A zip of output, metrics.json, pipeline.yaml and lineage.json."""
        return self._download(f"/runs/{ref}/export", dest)

    def events(self, ref: str) -> Iterator[tuple[str, RunEventPublic | RunPublic | dict[str, Any]]]:
        """The run's server-sent events as ``(name, payload)``: ``run`` (a RunPublic),
        ``progress`` (a RunEventPublic), then ``end``; the iterator stops at the end."""
        for name, payload in self._events(f"/runs/{ref}/events"):
            if name == "run":
                yield name, RunPublic.model_validate(payload)
            elif name == "progress":
                yield name, RunEventPublic.model_validate(payload)
            else:
                yield name, payload

    def follow(self, ref: str,
               on_event: Callable[[RunEventPublic], object] | None = None) -> RunPublic:
        """Wait for a run to finish, passing each progress event to ``on_event``."""
        final: RunPublic | None = None
        for name, payload in self.events(ref):
            if name == "progress" and on_event is not None:
                on_event(payload)  # type: ignore[arg-type]
            elif name == "run":
                final = payload  # type: ignore[assignment]
        return final if final is not None else self.get_run(ref)

    # searches (optimize) ------------------------------------------------------------------

    def search(self, model: str, dataset: str, *, device: str | None = None,
               objective: str = "size", max_accuracy_drop: float = 1.0,
               time_budget_s: float = 600.0, max_trials: int | None = None, epochs: int = 3,
               seed: int = 0, project: str | None = None,
               quality_budget: str | None = None) -> SearchPublic:
        """Start a search of compression pipelines on the server (it runs there in the
        background); follow it with :meth:`follow_search`. ``quality_budget`` is the budget
        in the dataset task's metric (``cosine=0.01``; see ``docs/optimize``)."""
        body = {"model": model, "dataset": dataset, "device": device, "objective": objective,
                "max_accuracy_drop": max_accuracy_drop, "quality_budget": quality_budget,
                "time_budget_s": time_budget_s,
                "max_trials": max_trials, "epochs": epochs, "seed": seed, "project": project}
        return self._one(SearchPublic, "POST", "/searches",
                         json={k: v for k, v in body.items() if v is not None})

    def get_search(self, search_id: str) -> SearchPublic:
        return self._one(SearchPublic, "GET", f"/searches/{search_id}")

    def list_searches(self, project: str | None = None) -> list[SearchPublic]:
        return self._many(SearchPublic, "/searches", params={"project": project})

    def cancel_search(self, search_id: str) -> SearchPublic:
        return self._one(SearchPublic, "POST", f"/searches/{search_id}/cancel")

    def search_events(self, search_id: str
                      ) -> Iterator[tuple[str, SearchPublic | Candidate | SearchEventPublic
                                          | dict[str, Any]]]:
        """The search's server-sent events as ``(name, payload)``: ``search`` (a
        SearchPublic, first and last), ``candidate`` (a Candidate), ``state`` (a
        SearchEventPublic), then ``end``; the iterator stops at the end."""
        for name, payload in self._events(f"/searches/{search_id}/events"):
            if name == "search":
                yield name, SearchPublic.model_validate(payload)
            elif name == "candidate":
                yield name, Candidate.model_validate(payload)
            elif name == "state":
                yield name, SearchEventPublic.model_validate(payload)
            else:
                yield name, payload

    def follow_search(self, search_id: str,
                      on_event: Callable[[str, Any], object] | None = None) -> SearchPublic:
        """Wait for a search to end, passing each ``candidate`` and ``state`` event to
        ``on_event(name, payload)``; returns the ended search. Every candidate is passed
        once, also those that had finished before this call connected (they come in the
        first snapshot of the search, not as events)."""
        final: SearchPublic | None = None
        seen: set[str] = set()

        def candidate(found: Candidate) -> None:
            if found.run_id not in seen:
                seen.add(found.run_id)
                if on_event is not None:
                    on_event("candidate", found)

        for name, payload in self.search_events(search_id):
            if isinstance(payload, SearchPublic):
                if final is None:
                    for found in payload.candidates:
                        candidate(found)
                final = payload
            elif isinstance(payload, Candidate):
                candidate(payload)
            elif name != "end" and on_event is not None:
                on_event(name, payload)
        return final if final is not None else self.get_search(search_id)

    def _events(self, path: str) -> Iterator[tuple[str, Any]]:
        """Server-sent events of ``/api/v1{path}`` as ``(name, decoded JSON)`` until
        ``end``."""
        with _reachable(self._http.base_url), \
                self._http.stream("GET", API + path, headers=self._headers(),
                                  timeout=httpx.Timeout(30.0, read=None)) as response:
            _raise_for_error(response)
            name, data = "message", []
            for line in response.iter_lines():
                if line.startswith(":"):
                    continue
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    yield name, json.loads("\n".join(data))
                    if name == "end":
                        return
                    name, data = "message", []

    # webhooks -----------------------------------------------------------------------------

    def create_webhook(self, url: str, *, project: str | None = None,
                       secret: str | None = None,
                       events: list[str] | None = None) -> WebhookCreated:
        body = {"url": url, "project": project, "secret": secret, "events": events}
        return self._one(WebhookCreated, "POST", "/webhooks",
                         json={k: v for k, v in body.items() if v is not None})

    def list_webhooks(self, project: str | None = None) -> list[WebhookPublic]:
        return self._many(WebhookPublic, "/webhooks", params={"project": project})

    def delete_webhook(self, webhook_id: str) -> None:
        self.request("DELETE", f"/webhooks/{webhook_id}")


def _attachment_name(response: httpx.Response, fallback: str) -> str:
    from email.message import Message

    message = Message()
    message["content-disposition"] = response.headers.get("content-disposition", "")
    name = message.get_filename() or fallback
    return Path(name).name or fallback
