"""The agent's directory and the two files that say who it is and what it runs.

Layout of the root directory (``--root``)::

    agent.json            who this device is: server, tenant, controller id, credential,
                          the release key (the trust anchor). Mode 0600.
    state.json            what is committed, the trial in progress, reports not yet delivered.
    downloads/<action>/   files of a deployment as they arrive (``<name>.part`` while partial)
    slots/a  slots/b      the two install slots
    current -> slots/x    the committed slot (absent before the first install)

Both JSON files are written atomically and durably: a temporary file in the same folder,
``fsync``, ``os.replace``, then ``fsync`` of the folder. A crash leaves the old file or the
new one, never a mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinymlaas.contracts.ota import Enrollment
from tinymlaas.errors import InvalidInputError

__all__ = ["AgentConfig", "AgentState", "Installed", "Layout", "Trial", "load_config",
           "load_state", "save_config", "save_state", "write_json_atomic"]

SlotName = Literal["a", "b"]
#: How many finished actions the state remembers (to answer a re-offered one).
KEEP_FINISHED = 20


class Layout:
    """The paths under the agent's root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "agent.json"
        self.state = root / "state.json"
        self.downloads = root / "downloads"
        self.slots = root / "slots"
        self.current = root / "current"
        self.current_new = root / "current.new"

    def slot(self, name: str) -> Path:
        return self.slots / name

    def create(self) -> None:
        for folder in (self.root, self.downloads, self.slots):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write ``data`` as JSON to ``path``: all of it or nothing, on disk when this returns."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AgentConfig(Enrollment):
    """``agent.json``: the enrollment and the server it came from, kept for every later
    start."""

    server: str
    poll_s: int = 60


class Installed(_Model):
    """A release in a slot."""

    slot: SlotName
    version: int
    release_id: str
    action_id: str
    kind: str
    package: str
    package_sha256: str
    #: The import package of a python-wheel (what the health check and inference import).
    import_name: str | None = None


class Trial(Installed):
    """A release being installed: ``installing`` (slot being written), ``switching``
    (``current`` may point to it or not), ``switched`` (it does, not yet committed)."""

    phase: Literal["installing", "switching", "switched"]


class AgentState(_Model):
    """``state.json``."""

    committed: Installed | None = None
    trial: Trial | None = None
    #: Anti-rollback floor: the highest version ever committed; never lowered.
    floor_version: int = 0
    #: Final feedback (DDI JSON) per action, saved before it is sent, removed once delivered.
    pending: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: The final feedback of the last actions delivered (answers a re-offered action).
    finished: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def finish(self, action_id: str, feedback: dict[str, Any]) -> None:
        self.pending.pop(action_id, None)
        self.finished[action_id] = feedback
        while len(self.finished) > KEEP_FINISHED:
            self.finished.pop(next(iter(self.finished)))


def load_config(layout: Layout) -> AgentConfig | None:
    if not layout.config.exists():
        return None
    try:
        return AgentConfig.model_validate_json(layout.config.read_bytes())
    except ValidationError as exc:
        raise InvalidInputError(f"{layout.config} is damaged ({exc.errors()[0]['msg']}); "
                                "remove it and enroll the device again") from None


def save_config(layout: Layout, config: AgentConfig) -> None:
    write_json_atomic(layout.config, config.model_dump(mode="json"))


def load_state(layout: Layout) -> AgentState:
    if not layout.state.exists():
        return AgentState()
    try:
        return AgentState.model_validate_json(layout.state.read_bytes())
    except ValidationError as exc:
        raise InvalidInputError(f"{layout.state} is damaged ({exc.errors()[0]['msg']})") from None


def save_state(layout: Layout, state: AgentState) -> None:
    write_json_atomic(layout.state, state.model_dump(mode="json"))
