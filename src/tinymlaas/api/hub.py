"""Fetching a model or dataset file from the Hugging Face Hub by repo id.

Uses ``huggingface_hub.hf_hub_download`` and so its cache: a file already cached is not
fetched again, ``HF_HUB_OFFLINE=1`` uses only the cache, and ``HF_ENDPOINT`` points at a
mirror. These variables are read at call time, so changing them needs no restart.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from tinymlaas.errors import (
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)

__all__ = ["hub_download"]

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
_TRUE = {"1", "true", "yes", "on"}


def _check(repo_id: str, filename: str) -> None:
    if not _REPO.match(repo_id) or ".." in repo_id:
        raise InvalidInputError(f"{repo_id!r} is not a Hugging Face repo id (owner/name)")
    parts = filename.split("/")
    if filename.startswith("/") or "\\" in filename or any(p in {"", ".", ".."} for p in parts):
        raise InvalidInputError(f"{filename!r} is not a file path inside the repo")


def hub_download(repo_id: str, filename: str, *, revision: str | None = None,
                 repo_type: Literal["model", "dataset"] = "model",
                 max_bytes: int | None = None) -> Path:
    """The local path of ``filename`` from ``repo_id`` (downloaded or from the cache).

    Raises:
        InvalidInputError: a malformed repo id or file name.
        NotFoundError: no such repo, revision or file (or, offline, not cached).
        PayloadTooLargeError: the file is larger than ``max_bytes``.
        ServiceUnavailableError: the Hub (or mirror) cannot be reached.
    """
    _check(repo_id, filename)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE
    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    try:
        path = Path(hf_hub_download(
            repo_id=repo_id, filename=filename, revision=revision, repo_type=repo_type,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None, local_files_only=offline))
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        hint = " in the local cache (offline mode)" if offline else " on the Hub"
        raise NotFoundError(f"{where} was not found{hint}",
                            {"kind": "hub_file", "error": type(exc).__name__}) from None
    except HFValidationError as exc:
        raise InvalidInputError(f"{where}: {str(exc).splitlines()[0][:300]}") from None
    except (OfflineModeIsEnabled, HfHubHTTPError, OSError) as exc:
        raise ServiceUnavailableError(f"cannot fetch {where} from the Hugging Face Hub: "
                                      f"{str(exc).splitlines()[0][:300]}") from None
    except Exception as exc:  # httpx transport errors and the like
        raise ServiceUnavailableError(f"cannot fetch {where} from the Hugging Face Hub: "
                                      f"{type(exc).__name__}") from None
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise PayloadTooLargeError(f"{where} is larger than the limit of {max_bytes} bytes",
                                   {"limit_bytes": max_bytes})
    return path
