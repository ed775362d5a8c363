"""Sites: the customer's machines where steps run next to data that never leaves them.

A *site* belongs to a project and holds a secret token (shown once, stored as its sha256).
Workers at the site authenticate with it, never with a user's token, and announce
themselves with a heartbeat: each worker's id, host name, last heartbeat and the steps it
runs.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

__all__ = ["MAX_SITE_PATH", "SITE_SCHEME", "WORKER_TIMEOUT_S", "Site", "SiteDataset",
           "SiteWorker", "worker_alive"]

#: How a dataset at a site is named: ``site://NAME/relative/path``.
SITE_SCHEME = "site://"
#: The longest relative path of a site's dataset.
MAX_SITE_PATH = 500

#: A worker whose last heartbeat is older than this is shown as gone.
WORKER_TIMEOUT_S = 90.0


class SiteWorker(BaseModel):
    """One worker process at a site, as its last heartbeat described it."""

    id: str
    hostname: str
    last_heartbeat: datetime
    running_steps: list[str] = Field(default_factory=list)


class Site(BaseModel):
    """A named place where steps run (a project's), with its workers."""

    id: str
    project: str
    name: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    workers: list[SiteWorker] = Field(default_factory=list)


def worker_alive(worker: SiteWorker, now: datetime | None = None,
                 timeout_s: float = WORKER_TIMEOUT_S) -> bool:
    """Whether the worker sent a heartbeat within ``timeout_s``."""
    now = now or datetime.now(UTC)
    last = worker.last_heartbeat
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return (now - last).total_seconds() <= timeout_s


class SiteDataset(BaseModel):
    """A dataset whose file stays at a site: where the site's workers read it (``path``,
    under their data root), the options it was registered with (a worker turns the file into
    the canonical arrays again with them) and what the worker that described it reported."""

    site_id: str
    path: str = Field(min_length=1, max_length=MAX_SITE_PATH)
    task: str | None = None
    label_column: str | None = None
    image_size: tuple[int, int] | None = None
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The file's sha256.")
    source_bytes: int = Field(ge=0)
    #: The canonical arrays per model input (name: [dtype, per-sample shape]); None for a
    #: single array ``X``.
    fields: dict[str, tuple[str, list[int]]] | None = None
