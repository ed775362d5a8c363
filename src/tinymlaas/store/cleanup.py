"""Deleting records, and the reference-safe garbage collection of artifacts.

Artifacts are shared by content: two runs that make the same bytes hold one blob. So deleting
a run, a model or a dataset never deletes blobs directly; it deletes rows, and then
:func:`collect_garbage` frees every artifact that nothing left refers to. An artifact is in
use while a model or dataset is stored in it, a run's step made it or ended with it, or it
holds the outputs of an evaluation of an artifact in use (the reference a later comparison
reads). Step-cache and evaluation rows of freed artifacts go with them: a later run computes
them again.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import delete, select

from tinymlaas.domain import RunStatus
from tinymlaas.errors import ConflictError
from tinymlaas.store import fleet, sites
from tinymlaas.store.accounts import (
    ExternalTransformerRow,
    MemberRow,
    PipelineTemplateRow,
    WebhookRow,
)
from tinymlaas.store.attempts import AttemptRow
from tinymlaas.store.metadata import MetadataStore
from tinymlaas.store.searches import SearchRow
from tinymlaas.store.tables import (
    ArtifactRow,
    DatasetRow,
    DeviceRow,
    EvaluationRow,
    ModelRow,
    ProjectRow,
    RunRow,
    StepCacheRow,
    StepRow,
)

__all__ = ["ACTIVE", "collect_garbage", "delete_project", "delete_records", "runs_using"]

#: Runs that a process may be executing: never deleted under it.
ACTIVE = frozenset({RunStatus.pending.value, RunStatus.running.value})


def runs_using(meta: MetadataStore, *, model_id: str | None = None,
               dataset_id: str | None = None, project: str | None = None) -> list[RunRow]:
    """The runs that start from a model, use a dataset, or belong to a project."""
    with meta.session() as s:
        query = select(RunRow)
        if model_id is not None:
            query = query.where(RunRow.model_id == model_id)
        if dataset_id is not None:
            query = query.where(RunRow.dataset_id == dataset_id)
        if project is not None:
            query = query.where(RunRow.project == project)
        rows = list(s.scalars(query))
        s.expunge_all()
        return rows


def delete_records(meta: MetadataStore, *, runs: Collection[str] = (),
                   models: Collection[str] = (), datasets: Collection[str] = ()) -> None:
    """Delete runs (with their steps and their jobs' attempts at sites), then models and
    datasets, in one transaction.

    Raises:
        ConflictError: a run is queued or executing (cancel it first), or a model or dataset
            is still used by a run that is not deleted with it.
    """
    with meta.session() as s:
        active = list(s.scalars(select(RunRow.id).where(RunRow.id.in_(list(runs)),
                                                        RunRow.status.in_(ACTIVE))))
        if active:
            raise ConflictError(f"run {active[0]} is queued or running; cancel it before "
                                "deleting it", {"runs": sorted(active)})
        s.execute(delete(StepRow).where(StepRow.run_id.in_(list(runs))))
        s.execute(delete(AttemptRow).where(AttemptRow.run_id.in_(list(runs))))
        s.execute(delete(RunRow).where(RunRow.id.in_(list(runs))))
        for column, ids, what in ((RunRow.model_id, models, "model"),
                                  (RunRow.dataset_id, datasets, "dataset")):
            users = list(s.scalars(select(RunRow.id).where(column.in_(list(ids)))))
            if users:
                raise ConflictError(f"the {what} is used by {len(users)} run(s); delete them "
                                    "first, or delete with force", {"runs": sorted(users)})
        s.execute(delete(ModelRow).where(ModelRow.id.in_(list(models))))
        s.execute(delete(DatasetRow).where(DatasetRow.id.in_(list(datasets))))


def delete_project(meta: MetadataStore, project: str) -> None:
    """Delete a project and everything in it (its runs must not be executing)."""
    runs = [r.id for r in runs_using(meta, project=project)]
    with meta.session() as s:
        models = list(s.scalars(select(ModelRow.id).where(ModelRow.project == project)))
        datasets = list(s.scalars(select(DatasetRow.id).where(DatasetRow.project == project)))
    delete_records(meta, runs=runs, models=models, datasets=datasets)
    with meta.session() as s:
        devices = list(s.scalars(select(fleet.DeviceRow.id)
                                 .where(fleet.DeviceRow.project == project)))
        s.execute(delete(fleet.EventRow).where(fleet.EventRow.device_id.in_(devices)))
        rollouts = select(fleet.RolloutRow.id).where(fleet.RolloutRow.project == project)
        s.execute(delete(fleet.ActionRow).where(fleet.ActionRow.rollout_id.in_(rollouts)))
        project_sites = select(sites.SiteRow.id).where(sites.SiteRow.project == project)
        s.execute(delete(sites.SiteWorkerRow)
                  .where(sites.SiteWorkerRow.site_id.in_(project_sites)))
        for table in (DeviceRow, ExternalTransformerRow, PipelineTemplateRow, WebhookRow,
                      SearchRow, fleet.DeviceRow, fleet.ReleaseRow, fleet.RolloutRow,
                      fleet.InferenceRow, AttemptRow, sites.SiteRow):
            s.execute(delete(table).where(table.project == project))
        s.execute(delete(MemberRow).where(MemberRow.project_id == project))
        s.execute(delete(ProjectRow).where(ProjectRow.id == project))


def collect_garbage(meta: MetadataStore) -> list[str]:
    """Delete the rows of every artifact nothing refers to; returns their sha256s, whose
    blobs the caller removes.

    Nothing is collected while a run is queued or executing: such a run may be about to
    record an artifact it just made, or one it found in the step cache.
    """
    with meta.session() as s:
        if s.scalars(select(RunRow.id).where(RunRow.status.in_(ACTIVE)).limit(1)).first():
            return []
        used: set[str] = set(s.scalars(select(ModelRow.artifact_sha)))
        used |= set(s.scalars(select(DatasetRow.artifact_sha)))
        used |= {sha for sha in s.scalars(select(RunRow.output_sha)) if sha}
        used |= {sha for sha in s.scalars(select(StepRow.output_sha)) if sha}
        for column in (fleet.ReleaseRow.package_sha, fleet.ReleaseRow.golden_sha,
                       fleet.InferenceRow.inputs_sha, fleet.InferenceRow.outputs_sha):
            used |= {sha for sha in s.scalars(select(column)) if sha}
        evaluations = list(s.execute(select(EvaluationRow.key, EvaluationRow.artifact_sha,
                                            EvaluationRow.metrics)))
        used |= {_outputs(metrics) for _, sha, metrics in evaluations if sha in used} - {None}
        free = [sha for sha in s.scalars(select(ArtifactRow.sha256)) if sha not in used]
        stale = [key for key, sha, _ in evaluations if sha not in used]
        s.execute(delete(EvaluationRow).where(EvaluationRow.key.in_(stale)))
        s.execute(delete(StepCacheRow).where(StepCacheRow.output_sha.in_(free)))
        s.execute(delete(ArtifactRow).where(ArtifactRow.sha256.in_(free)))
        return free


def _outputs(metrics: dict[str, Any]) -> str | None:
    value = metrics.get("outputs_sha") if isinstance(metrics, dict) else None
    return value if isinstance(value, str) else None
