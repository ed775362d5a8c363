"""ORM tables. Only the store module uses them; everything else sees domain entities."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every backend (SQLite drops the zone; we restore UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class ProjectRow(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(255))
    parents: Mapped[list[Any]]
    step_key: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    project: Mapped[str] = mapped_column(String(40), index=True)
    artifact_sha: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"))
    kind: Mapped[str] = mapped_column(String(40))
    task: Mapped[str] = mapped_column(String(40))
    inputs: Mapped[list[Any]]
    outputs: Mapped[list[Any]]
    parameters: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class DatasetRow(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    project: Mapped[str] = mapped_column(String(40), index=True)
    artifact_sha: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"))
    source_format: Mapped[str] = mapped_column(String(20))
    task: Mapped[str] = mapped_column(String(40))
    num_samples: Mapped[int] = mapped_column(Integer)
    feature_shape: Mapped[list[Any]]
    num_classes: Mapped[int | None] = mapped_column(Integer)
    class_names: Mapped[list[Any]]
    splits: Mapped[dict[str, Any]]
    location: Mapped[str] = mapped_column(String(600))
    site: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]


class DeviceRow(Base):
    """Custom devices of a project; the shipped catalog lives in the package."""

    __tablename__ = "devices"
    project: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    spec: Mapped[dict[str, Any]]


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    project: Mapped[str] = mapped_column(String(40), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    device: Mapped[str | None] = mapped_column(String(100))
    pipeline: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    output_sha: Mapped[str | None] = mapped_column(String(64))
    baseline: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Who executes the run ("host:pid:process start"), renewed by heartbeat until it ends.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    # The site (id) whose workers run the steps; none: this server's own processes.
    site: Mapped[str | None] = mapped_column(String(40))


class StepRow(Base):
    __tablename__ = "steps"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    transformer: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    key: Mapped[str | None] = mapped_column(String(64))
    output_sha: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)
    log: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)


class StepCacheRow(Base):
    __tablename__ = "step_cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    output_sha: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"))
    transformer: Mapped[str] = mapped_column(String(100))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class EvaluationRow(Base):
    __tablename__ = "evaluations"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    artifact_sha: Mapped[str] = mapped_column(String(64), index=True)
    dataset_id: Mapped[str] = mapped_column(String(40))
    reference_sha: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
