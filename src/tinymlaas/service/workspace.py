"""The per-user workspace: who may see and do what.

:class:`Workspace` is the :class:`~tinymlaas.service.Services` facade seen through one
user's eyes: every lookup is limited to the projects they own or were given, and anything
else is reported as not found, exactly like a record that does not exist. Owners share
their projects from here, and project members manage its webhooks.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from pathlib import Path
from typing import Any

from tinymlaas.domain import (
    Artifact,
    Dataset,
    DatasetSplits,
    Model,
    Pipeline,
    Project,
    Run,
    Task,
)
from tinymlaas.domain.entities import NAME_PATTERN
from tinymlaas.domain.searches import Search
from tinymlaas.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)
from tinymlaas.formats.text_datasets import TextOptions
from tinymlaas.service.pipelines import parse_pipeline
from tinymlaas.service.searches import Searches, SearchRequest
from tinymlaas.service.services import (
    ComparisonRow,
    Deletion,
    PackageOutput,
    Services,
    SigningKey,
)
from tinymlaas.store.accounts import (
    AccountStore,
    ExternalTransformer,
    Membership,
    PipelineTemplate,
    Role,
    User,
    Webhook,
)
from tinymlaas.store.metadata import new_id
from tinymlaas.store.paging import Key, Page, page_list

__all__ = ["TransformerInfo", "Workspace"]

_NAME = re.compile(NAME_PATTERN)
_WRITE_ROLES = frozenset({"owner", "editor"})


def _unambiguous(what: str, ref: str, found: list[tuple[str, str]]) -> tuple[str, str]:
    """The one match, or the newest when all are in one project; a name that several of
    the user's projects use is a 409 listing the candidates."""
    if len({project for _, project in found}) > 1:
        raise ConflictError(
            f"{what} name {ref!r} is used in several of your projects; give its id or the "
            "project", {"kind": what, "ref": ref,
                        "candidates": [{"id": i, "project": p} for i, p in found]})
    return found[0]


class TransformerInfo:
    """A transformer as listed to a user: built-in, plug-in or registered external."""

    def __init__(self, name: str, version: str, summary: str, accepts: list[str],
                 produces: str, needs: str, params_schema: dict[str, Any],
                 external: ExternalTransformer | None = None) -> None:
        self.name = name
        self.version = version
        self.summary = summary
        self.accepts = accepts
        self.produces = produces
        self.needs = needs
        self.params_schema = params_schema
        self.external = external


class Workspace:
    """One user's view of the product; everything outside their projects is "not found".

    Args:
        services: The shared service facade.
        store: The account store on the same database.
        user: Whose view this is.
    """

    def __init__(self, services: Services, store: AccountStore, user: User) -> None:
        self.services = services
        self.store = store
        self.user = user
        self._roles: dict[str, Role] | None = None

    @property
    def roles(self) -> dict[str, Role]:
        """The user's role in each project they own or were given (read on first use, in
        one query: a request for one run by id needs none of them)."""
        if self._roles is None:
            self._roles = self.store.project_roles(self.user.id)
        return self._roles

    @property
    def projects(self) -> set[str]:
        """Ids of the projects the user owns or was given."""
        return set(self.roles)

    # projects -----------------------------------------------------------------------------

    def project_id(self, ref: str | None, write: bool = False) -> str:
        """A visible project id (default: the user's own); ``write`` needs owner or editor."""
        project = ref or self.user.default_project
        role = self.roles.get(project)
        if role is None:
            raise NotFoundError(f"project {project!r} not found", {"kind": "project",
                                                                   "ref": project})
        if write and role not in _WRITE_ROLES:
            raise ForbiddenError(f"you can view project {project!r} but not change it; "
                                 "ask its owner for the editor role")
        return project

    def create_project(self, name: str) -> Project:
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInputError("a project name has 1 to 100 characters")
        project = self.store.add_project(Project(id=new_id("proj"), name=name,
                                                 owner=self.user.id))
        self.roles[project.id] = "owner"
        return project

    def list_projects(self) -> list[Project]:
        return self.store.list_projects(self.user.id)

    def get_project(self, ref: str) -> Project:
        project = self.store.get_project(self.project_id(ref))
        if project is None:
            raise NotFoundError(f"project {ref!r} not found")
        return project

    def share_project(self, ref: str, email: str, role: Role = "editor") -> Membership:
        """Give another user access; only the owner may share."""
        project = self.project_id(ref)
        if self.store.role_of(project, self.user.id) != "owner":
            raise ForbiddenError("only the project's owner can share it")
        if role == "owner":
            raise InvalidInputError("a project has one owner; share it as editor or viewer")
        found = self.store.find_user(email.strip().lower())
        if found is None:
            raise NotFoundError(f"no account for {email!r}; they need to register first",
                                {"kind": "user"})
        other = found[0]
        if other.id == self.user.id:
            raise InvalidInputError("you already own this project")
        self.store.add_member(project, other.id, role)
        return next(m for m in self.store.list_members(project) if m.user_id == other.id)

    def unshare_project(self, ref: str, user_id: str) -> None:
        project = self.project_id(ref)
        if self.store.role_of(project, self.user.id) != "owner":
            raise ForbiddenError("only the project's owner can change who has access")
        if not self.store.remove_member(project, user_id):
            raise NotFoundError(f"user {user_id!r} is not a member of {project!r}")

    def members(self, ref: str) -> list[Membership]:
        return self.store.list_members(self.project_id(ref))

    # pages of the lists (keyset pagination: tinymlaas.store.paging) -----------------------

    def page_projects(self, limit: int, after: Key | None = None) -> Page[Project]:
        return self.store.page_projects(self.user.id, limit, after)

    def page_members(self, ref: str, limit: int, after: Key | None = None) -> Page[Membership]:
        """The owner first, then the members in the order they joined."""
        return page_list(self.members(ref), lambda m: ("0",) if m.role == "owner" else
                         ("1", m.created_at.isoformat(), m.user_id), limit, after)

    def page_models(self, limit: int, after: Key | None = None,
                    project: str | None = None) -> Page[Model]:
        return self.services.meta.page_models(self._scope(project), limit, after)

    def page_datasets(self, limit: int, after: Key | None = None,
                      project: str | None = None) -> Page[Dataset]:
        return self.services.meta.page_datasets(self._scope(project), limit, after)

    def page_runs(self, limit: int, after: Key | None = None, project: str | None = None,
                  status: str | None = None) -> Page[Run]:
        """Newest first."""
        if project is None:  # every project of the user's: one connection
            return self.store.page_visible_runs(self.user.id, limit, after, status)
        return self.services.meta.page_runs(self._scope(project), limit, after, status)

    def page_webhooks(self, limit: int, after: Key | None = None,
                      project: str | None = None) -> Page[Webhook]:
        return self.store.page_webhooks(self._scope(project), limit, after)

    def _scope(self, project: str | None) -> set[str]:
        return {self.project_id(project)} if project else self.projects

    def _resolve(self, what: str, ref: str, project: str | None = None) -> str:
        """The id of the ``what`` with id or name ``ref`` in ``project`` (default: any of
        the user's projects). A name found in several projects is ambiguous: 409."""
        found = self.store.resolve(what, ref, self._scope(project))
        if not found:
            raise NotFoundError(f"{what} {ref!r} not found", {"kind": what, "ref": ref})
        return _unambiguous(what, ref, found)[0]

    # models and datasets ------------------------------------------------------------------

    def add_model(self, path: Path, name: str | None = None, *, project: str | None = None,
                  task: Task = Task.classification, input_shape: list[int] | None = None,
                  description: str = "") -> Model:
        return self.services.add_model(path, name, task=task,
                                       project=self.project_id(project, write=True),
                                       input_shape=input_shape, description=description)

    def add_hf_model(self, source: str, name: str | None = None, *,
                     revision: str | None = None, project: str | None = None,
                     task: Task | None = None, description: str = "") -> Model:
        """A Hugging Face model (``hf:ORG/NAME``, a model folder or a cache folder)."""
        return self.services.add_hf_model(source, name, revision=revision, task=task,
                                          project=self.project_id(project, write=True),
                                          description=description)

    def list_models(self, project: str | None = None) -> list[Model]:
        return [m for p in sorted(self._scope(project)) for m in self.services.list_models(p)]

    def get_model(self, ref: str, project: str | None = None) -> Model:
        return self.services.get_model(self._resolve("model", ref, project))

    def model_file(self, ref: str) -> tuple[Artifact, Path]:
        """The model's file, named after this model (never after another user's upload of
        the same content)."""
        return self.services.model_file(self.get_model(ref))

    def add_dataset(self, source: str, name: str | None = None, *, project: str | None = None,
                    task: Task | None = None, label_column: str | None = None,
                    image_size: tuple[int, int] | None = None,
                    splits: DatasetSplits | None = None,
                    text: TextOptions | None = None) -> Dataset:
        project_id = self.project_id(project, write=True)
        if text is not None:  # the tokenizer's model: any of the user's projects, by id
            text = dataclasses.replace(text, tokenizer=self._resolve("model", text.tokenizer))
        return self.services.add_dataset(source, name, task=task, label_column=label_column,
                                         image_size=image_size, splits=splits,
                                         project=project_id, text=text)

    def list_datasets(self, project: str | None = None) -> list[Dataset]:
        return [d for p in sorted(self._scope(project)) for d in self.services.list_datasets(p)]

    def get_dataset(self, ref: str, project: str | None = None) -> Dataset:
        return self.services.get_dataset(self._resolve("dataset", ref, project))

    def dataset_file(self, ref: str) -> tuple[Artifact, Path]:
        """The dataset's canonical NPZ, named after this dataset."""
        return self.services.dataset_file(self.get_dataset(ref))

    # transformers and templates -----------------------------------------------------------

    def list_transformers(self) -> list[TransformerInfo]:
        from tinymlaas.transformers.registry import list_transformers

        items = [TransformerInfo(t.name, t.version, t.summary, sorted(t.accepts),
                                 t.produces.value, t.needs, t.Params.model_json_schema())
                 for t in list_transformers()]
        for ext in self.store.list_externals(self.projects):
            items.append(self._external_info(ext))
        return items

    def get_transformer(self, name: str) -> TransformerInfo:
        matches = [item for item in self.list_transformers() if item.name == name]
        if not matches:
            raise NotFoundError(f"unknown transformer {name!r}", {"kind": "transformer"})
        if len(matches) > 1:
            _unambiguous("transformer", name, [(m.external.id, m.external.project)
                                               for m in matches if m.external])
        return matches[0]

    def register_external(self, name: str, params: dict[str, Any], *, summary: str = "",
                          project: str | None = None) -> TransformerInfo:
        """Store a command or image as a named transformer (an ``external`` step)."""
        from tinymlaas.transformers.registry import known_names, validate_params

        self.check_foreign_code()
        if not _NAME.match(name):
            raise InvalidInputError(f"transformer name {name!r} must match {NAME_PATTERN}")
        if name in known_names():
            raise ConflictError(f"{name!r} is a built-in transformer; pick another name")
        clean = validate_params("external", params).model_dump(mode="json")
        item = self.store.add_external(ExternalTransformer(
            id=new_id("xfm"), project=self.project_id(project, write=True), name=name,
            summary=summary, params=clean))
        return self._external_info(item)

    @staticmethod
    def _external_info(ext: ExternalTransformer) -> TransformerInfo:
        from tinymlaas.transformers.registry import get_transformer

        base = get_transformer("external")
        return TransformerInfo(ext.name, f"external-{base.version}", ext.summary or base.summary,
                               sorted(base.accepts), ext.params.get("produces", "onnx"),
                               base.needs,
                               {"type": "object", "additionalProperties": True,
                                "description": "Merged into the external command's "
                                               "params.json ('config')."},
                               ext)

    def check_foreign_code(self, pipeline: Pipeline | None = None) -> None:
        """May this user register (no ``pipeline``) or run ``pipeline``'s command and image
        steps? The operator decides with ``TINYMLAAS_EXTERNAL_STEPS``.

        Raises:
            ForbiddenError: naming the setting that would allow it.
        """
        if pipeline is not None and all(step.transformer != "external"
                                        for step in pipeline.steps):
            return
        policy = self.services.settings.external_steps or "off"
        if policy == "everyone" or (policy == "admins" and self.user.is_admin):
            return
        who = ("admins only; ask an admin, or the operator to set "
               "TINYMLAAS_EXTERNAL_STEPS=everyone" if policy == "admins" else
               "off; the operator can allow them with TINYMLAAS_EXTERNAL_STEPS=admins "
               "or everyone")
        raise ForbiddenError(f"command and image steps run foreign code on the server, and "
                             f"on this server they are {who}",
                             {"setting": "TINYMLAAS_EXTERNAL_STEPS", "value": policy})

    def expand(self, pipeline: Pipeline, project: str | None = None) -> Pipeline:
        """Replace steps naming an external transformer registered in ``project`` (default:
        the user's own) by ``external`` steps; other projects' names mean nothing here."""
        project_id = self.project_id(project or pipeline.project)
        externals = {e.name: e for e in self.store.list_externals({project_id})}
        steps = []
        for step in pipeline.steps:
            ext = externals.get(step.transformer)
            if ext is None:
                steps.append(step)
                continue
            params = dict(ext.params)
            params["config"] = {**params.get("config", {}), **step.params}
            steps.append(step.model_copy(update={"transformer": "external", "params": params}))
        return pipeline.model_copy(update={"steps": steps})

    def list_templates(self) -> list[PipelineTemplate]:
        from tinymlaas.service.pipelines import load_pipeline
        from tinymlaas.templates import template_names, template_path

        builtin = []
        for name in template_names():
            pipeline = load_pipeline(template_path(name))
            builtin.append(PipelineTemplate(id=f"builtin-{name}", project="builtin", name=name,
                                            pipeline=pipeline.model_dump(mode="json",
                                                                         exclude_none=True)))
        return [*builtin, *self.store.list_templates(self.projects)]

    def get_template(self, name: str, project: str | None = None) -> PipelineTemplate:
        """A template by id, or by name among the built-ins and ``project``'s templates (any
        of the user's projects when not given; a name in several is ambiguous: 409). A
        project's template shadows a built-in of the same name."""
        scope = self._scope(project)
        templates = [t for t in self.list_templates() if t.project in scope | {"builtin"}]
        matches = [t for t in templates if t.id == name] or \
            [t for t in templates if t.name == name]
        if not matches:
            raise NotFoundError(f"template {name!r} not found", {"kind": "template"})
        own = [t for t in matches if t.project != "builtin"]
        if len(own) > 1:
            _unambiguous("template", name, [(t.id, t.project) for t in own])
        return matches[-1]

    def create_template(self, name: str, pipeline: dict[str, Any], *, description: str = "",
                        project: str | None = None) -> PipelineTemplate:
        if not _NAME.match(name):
            raise InvalidInputError(f"template name {name!r} must match {NAME_PATTERN}")
        project_id = self.project_id(project, write=True)
        parsed = self._check_pipeline(parse_pipeline(pipeline, f"template {name}"), project_id)
        return self.store.add_template(PipelineTemplate(
            id=new_id("tpl"), project=project_id, name=name,
            description=description,
            pipeline=parsed.model_dump(mode="json", exclude_none=True)))

    def _check_pipeline(self, pipeline: Pipeline, project: str) -> Pipeline:
        from tinymlaas.transformers.registry import validate_params

        for index, step in enumerate(self.expand(pipeline, project).steps, start=1):
            validate_params(step.transformer, step.params, f"step {index} ")
        return pipeline

    # runs ---------------------------------------------------------------------------------

    def create_run(self, pipeline: Pipeline, *, model: str | None = None,
                   dataset: str | None = None, device: str | None = None,
                   name: str | None = None, project: str | None = None,
                   site: str | None = None) -> Run:
        """Validate and record a pending run in one of the user's projects (``site``: one
        of that project's sites, whose workers run the steps)."""
        project_id = self.project_id(project or pipeline.project, write=True)
        model_ref, dataset_ref = model or pipeline.model, dataset or pipeline.dataset
        if not model_ref:
            raise InvalidInputError("a run needs a model", {"field": "model"})
        model_id = self._resolve("model", model_ref, project_id)
        dataset_id = self._resolve("dataset", dataset_ref, project_id) if dataset_ref else None
        expanded = self.expand(pipeline, project_id)
        self.check_foreign_code(expanded)
        return self.services.create_run(expanded, model=model_id,
                                        dataset=dataset_id, device=device, name=name,
                                        project=project_id, site=site)

    def get_run(self, ref: str, project: str | None = None, *, logs: bool = True) -> Run:
        """A run by id or name; without ``logs`` its steps' logs are left empty (cheaper:
        for views that do not show them)."""
        if project is None:  # by id, visible to the user, in one session: the common case
            run = self.store.find_visible_run(ref, self.user.id, logs=logs)
            if run is not None:
                return run
        return self.services.get_run(self._resolve("run", ref, project))

    # searches -----------------------------------------------------------------------------

    def create_search(self, request: SearchRequest, project: str | None = None) -> Search:
        """Record a queued search in one of the user's projects (owner or editor); its
        model and dataset are looked up in that project only."""
        project_id = self.project_id(project, write=True)
        request = request.model_copy(update={
            "model": self._resolve("model", request.model, project_id),
            "dataset": self._resolve("dataset", request.dataset, project_id)})
        return Searches(self.services).create(request, project_id, created_by=self.user.id)

    def get_search(self, ref: str) -> Search:
        return Searches(self.services).get(ref, self.projects)

    def list_searches(self, project: str | None = None) -> list[Search]:
        """The searches of ``project`` (default: every project of the user), newest first."""
        return Searches(self.services).list(self._scope(project))

    def page_searches(self, limit: int, after: Key | None = None,
                      project: str | None = None) -> Page[Search]:
        """Newest first."""
        return Searches(self.services).store.page(self._scope(project), limit, after)

    def cancel_search(self, ref: str) -> Search:
        """Cancel a queued or running search (editor or owner of its project)."""
        search = self.get_search(ref)
        self.project_id(search.project, write=True)
        return Searches(self.services).cancel(search.id)

    # deleting -----------------------------------------------------------------------------

    def delete_run(self, ref: str) -> Deletion:
        """Delete one of the user's finished runs (editor or owner of its project)."""
        return self.services.delete_run(self.writable_run(ref).id)

    def delete_model(self, ref: str, *, force: bool = False) -> Deletion:
        model = self.get_model(ref)
        self.project_id(model.project, write=True)
        return self.services.delete_model(model.id, force=force)

    def delete_dataset(self, ref: str, *, force: bool = False) -> Deletion:
        dataset = self.get_dataset(ref)
        self.project_id(dataset.project, write=True)
        return self.services.delete_dataset(dataset.id, force=force)

    def delete_project(self, ref: str) -> Deletion:
        """Delete a project with everything in it, for every member (owner only); an
        account's personal project stays."""
        project = self.project_id(ref)
        if self.store.role_of(project, self.user.id) != "owner":
            raise ForbiddenError("only the project's owner can delete it")
        if self.store.is_default_project(project):
            raise ConflictError("this is an account's personal project, which cannot be "
                                "deleted; delete what is in it instead", {"project": project})
        deletion = self.services.delete_project(project)
        self.roles.pop(project, None)
        return deletion

    def writable_run(self, ref: str) -> Run:
        run = self.get_run(ref)
        self.project_id(run.project, write=True)
        return run

    def runnable_run(self, ref: str) -> Run:
        """A run this user may execute again (resubmit or rerun)."""
        run = self.writable_run(ref)
        self.check_foreign_code(run.pipeline)
        return run

    def list_runs(self, project: str | None = None, status: str | None = None) -> list[Run]:
        runs = [r for p in self._scope(project) for r in self.services.list_runs(p, status)]
        return sorted(runs, key=lambda r: r.created_at, reverse=True)

    def rerun(self, ref: str) -> Run:
        return self.services.rerun(self.runnable_run(ref).id)

    def compare(self, refs: list[str], reference: str | None = None) -> list[ComparisonRow]:
        ids = [self._resolve("run", r) for r in refs]
        return self.services.compare(ids, self._resolve("run", reference) if reference else None)

    def export_run(self, ref: str, out_dir: Path) -> list[Path]:
        return self.services.export_run(self.get_run(ref).id, out_dir)

    def run_artifacts(self, ref: str) -> list[Artifact]:
        """The run's input model, step outputs and output, with the names and times its
        people may see (:meth:`Services.named_artifacts`)."""
        run = self.get_run(ref)
        return self.services.named_artifacts(run, self.store.run_artifacts(run.id))

    def signing_key(self, ref: str | None = None, *, rotate: bool = False) -> SigningKey:
        """A project's signing key; rotating it is for the project's owner."""
        project = self.project_id(ref)
        if rotate and self.store.role_of(project, self.user.id) != "owner":
            raise ForbiddenError("only the project's owner can rotate its signing key")
        return self.services.signing_key(project, rotate=rotate)

    def run_packages(self, ref: str) -> list[PackageOutput]:
        """The run's installer outputs with their manifests."""
        return self.services.run_packages(self.get_run(ref))

    def run_layers(self, ref: str) -> list[Any] | None:
        """The compiler's per-layer profile of the run's output (:meth:`Services.run_layers`)."""
        return self.services.run_layers(self.get_run(ref))

    def run_artifact(self, ref: str, sha: str | None = None) -> tuple[Artifact, Path]:
        """One of a run's artifacts (default: its output) and where its bytes are."""
        run = self.get_run(ref)
        if sha is None:
            if run.output_sha is None:
                raise NotFoundError(f"run {run.id} has no output yet (it is "
                                    f"{run.status.value})", {"kind": "artifact"})
            sha = run.output_sha
        shas = self.store.run_artifacts(run.id)
        matches = [s for s in shas if s.startswith(sha)] if len(sha) >= 8 else []
        if len(matches) != 1:
            raise NotFoundError(f"artifact {sha[:12]!r} not found in run {run.id}",
                                {"kind": "artifact"})
        return (self.services.named_artifacts(run, matches)[0],
                self.services.artifact_path(matches[0]))

    # webhooks -----------------------------------------------------------------------------

    def add_webhook(self, url: str, *, project: str | None = None, secret: str | None = None,
                    events: list[str] | None = None) -> Webhook:
        from tinymlaas.notify.webhooks import check_webhook_url

        check_webhook_url(url, allow_private=self.services.settings.webhook_allow_private)
        allowed = {"run.succeeded", "run.degraded", "run.failed", "run.cancelled"}
        events = events or ["run.succeeded", "run.degraded", "run.failed"]
        if not set(events) <= allowed:
            raise InvalidInputError(f"webhook events are {sorted(allowed)}")
        secret = secret or self.services.settings.webhook_secret or secrets.token_urlsafe(24)
        return self.store.add_webhook(Webhook(id=new_id("hook"),
                                              project=self.project_id(project, write=True),
                                              url=url, secret=secret, events=events))

    def list_webhooks(self, project: str | None = None) -> list[Webhook]:
        return self.store.list_webhooks(self._scope(project))

    def delete_webhook(self, webhook_id: str) -> None:
        writable = {p for p, role in self.roles.items() if role in _WRITE_ROLES}
        if not self.store.delete_webhook(webhook_id, writable):
            raise NotFoundError(f"webhook {webhook_id!r} not found", {"kind": "webhook"})
