"""Settings, read from ``TINYMLAAS_*`` environment variables, and the server's keys in its
data directory.

Obtain them through :func:`get_settings`; nothing is built at import time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings", "home_key"]


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "tinymlaas"


class Settings(BaseSettings):
    """Everything configurable. Defaults give the embedded, single-machine setup."""

    model_config = SettingsConfigDict(env_prefix="TINYMLAAS_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Data directory.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: a SQLite file under home."
    )
    artifacts_dir: Path | None = Field(default=None, description="Default: home/artifacts.")
    max_model_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_dataset_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_archive_entries: int = Field(default=100_000, gt=0)
    max_archive_ratio: float = Field(default=200.0, gt=1)
    step_timeout_s: float = Field(default=3600.0, gt=0, description="Per-step wall clock limit.")
    step_memory_mb: int = Field(default=8192, gt=0, description="Per-step resident memory limit.")
    workers: int = Field(default=2, ge=1, le=64,
                         description="Steps run at once by the local executor.")
    max_classes: int = Field(default=10_000, ge=2, le=1_000_000, description="Most classes "
                             "(largest label + 1) a classification dataset may have.")
    # foreign code: command and image steps
    external_steps: Literal["off", "admins", "everyone"] | None = Field(
        default=None, description="Who may register or run command and image (external) "
        "steps. Unset: 'off' for `tinymlaas serve`, 'everyone' for the local CLI.")
    sandbox_user: str = Field(default="nobody", description="The unprivileged user command "
                              "steps run as when the server runs as root.")
    # run leases: a run being executed is owned by one process, which renews its lease
    lease_ttl_s: float = Field(default=60.0, gt=1, le=86_400, description="A run whose lease "
                               "was not renewed for this long is recovered by a server.")
    # site workers: steps of runs made with a site run there, through a Celery broker
    broker_url: str | None = Field(default=None, description="Celery broker (e.g. "
                                   "amqp://guest:guest@127.0.0.1:5672//, or redis://...): "
                                   "runs made with a site queue their steps there. Unset: "
                                   "every step runs in this server's processes.")
    site_lease_ttl_s: float = Field(default=30.0, gt=1, le=86_400, description="A step at "
                                    "a site whose worker stopped renewing its lease for this "
                                    "long is queued again.")
    site_attempts: int = Field(default=3, ge=1, le=20, description="Attempts of a step at "
                               "a site whose worker stops (its lease expires) before the "
                               "run fails.")
    site_queue_timeout_s: float = Field(default=3600.0, gt=0, le=30 * 86_400,
                                        description="A step at a site that no worker claims "
                                        "for this long fails (no live worker consumes the "
                                        "site's queue).")
    # server (``tinymlaas serve``) and remote CLI
    server_url: str | None = Field(default=None, description="Use this server instead of "
                                   "the local stores (CLI and SDK).",
                                   validation_alias=AliasChoices("TINYMLAAS_SERVER",
                                                                 "TINYMLAAS_SERVER_URL"))
    token: str | None = Field(default=None, description="API token for server_url.")
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0, description="Per upload.")
    max_body_bytes: int = Field(default=4 * 1024**2, ge=64 * 1024, description="Largest "
                                "request body the server reads into memory (JSON, forms); "
                                "larger ones are refused with a 413. Uploads stream to disk "
                                "under their own limits.")
    server_runs: int = Field(default=2, ge=1, description="Runs executed at once by a server.")
    server_threads: int = Field(default=8, ge=1, le=256, description="Requests that read or "
                                "write the database handled at once by each server process "
                                "(its thread pool); more only adds lock contention.")
    resume_interrupted: bool = Field(default=True, description="At server start, resubmit "
                                     "runs a stopped server left running (they resume from "
                                     "the step cache) instead of only marking them failed.")
    login_rate_limit: int = Field(default=10, ge=1, description="Log-in attempts per window "
                                  "per account.")
    login_rate_limit_client: int = Field(default=30, ge=1, description="Log-in attempts per "
                                         "window per client address.")
    login_rate_window_s: float = Field(default=60.0, gt=0)
    trusted_proxies: str = Field(default="", description="Comma-separated addresses or "
                                 "networks of reverse proxies whose X-Forwarded-For is "
                                 "believed; from anyone else it is ignored.")
    session_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0, description="Log-in token life.")
    token_cache_s: float = Field(default=2.0, ge=0, le=60, description="How long a server "
                                 "process remembers a verified token (0: never). A token "
                                 "revoked through one server process stops working there at "
                                 "once, in its other worker processes after at most this.")
    allow_registration: bool = Field(default=True, description="Anyone may create an account.")
    # notifications
    smtp_host: str | None = Field(default=None, description="No host: emails are only logged.")
    smtp_port: int = Field(default=25, gt=0)
    smtp_from: str = Field(default="tinymlaas@localhost")
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    webhook_secret: str | None = Field(default=None, description="Default HMAC-SHA256 key of "
                                       "webhooks registered without their own secret.")
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=300)
    webhook_attempts: int = Field(default=4, ge=1, le=20, description="Deliveries tried per "
                                  "event (with exponential backoff).")
    webhook_queue_size: int = Field(default=1000, ge=1, le=1_000_000, description="Pending "
                                    "webhook deliveries kept; more are dropped and logged.")
    webhook_allow_private: bool = Field(default=False, description="Allow webhooks to "
                                        "loopback, private and link-local addresses.")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'tinymlaas.db'}"

    @property
    def resolved_artifacts_dir(self) -> Path:
        return self.artifacts_dir or self.home / "artifacts"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (call ``get_settings.cache_clear()`` after changing env)."""
    return Settings()


@lru_cache(maxsize=16)
def home_key(home: Path, name: str) -> bytes:
    """The 32-byte key in file ``name`` of the data directory ``home`` (mode 0600), made on
    first use. Atomically: the processes of one server race to make it, the first one's
    wins, and all of them read the same; a key in use is never replaced."""
    path = home / name
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())
