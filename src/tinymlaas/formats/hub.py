"""Fetching from the Hugging Face Hub by repo id: one file, or the files of a model repo.

Uses ``huggingface_hub`` and so its cache: a file already cached is not fetched again,
``HF_HUB_OFFLINE=1`` uses only the cache, ``HF_ENDPOINT`` points at a mirror, and
``HF_HUB_CACHE`` / ``HF_HOME`` choose the cache. These variables are read at call time, so
changing them needs no restart.

Failures map onto the error tree the same way for both: the Hub answering "no such repo,
revision or file" is a 404; the Hub not answering (connection refused, timeouts, server
errors, or offline mode without the files in the cache) is a 503, never a 404, because the
files may well exist.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from tinymlaas.errors import (
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)

__all__ = ["MODEL_REPO_PATTERNS", "hub_download", "hub_snapshot", "parse_repo_ref"]

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_TRUE = {"1", "true", "yes", "on"}

#: The files of a model repo that an import reads: the config, safetensors weights and the
#: tokenizer. Pickled ``.bin`` weights are never fetched (loading them runs code).
MODEL_REPO_PATTERNS = (
    "config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
)


def _check_repo(repo_id: str) -> None:
    if not _REPO.match(repo_id) or ".." in repo_id:
        raise InvalidInputError(f"{repo_id!r} is not a Hugging Face repo id (owner/name)")


def _check(repo_id: str, filename: str) -> None:
    _check_repo(repo_id)
    parts = filename.split("/")
    if filename.startswith("/") or "\\" in filename or any(p in {"", ".", ".."} for p in parts):
        raise InvalidInputError(f"{filename!r} is not a file path inside the repo")


def parse_repo_ref(ref: str) -> tuple[str, str | None]:
    """``ORG/NAME`` and the revision of ``hf:ORG/NAME[@REVISION]`` (the ``hf:`` prefix is
    optional), checked.

    Raises:
        InvalidInputError: not a repo id, or a malformed revision.
    """
    text = ref.removeprefix("hf:").removeprefix("hf://")
    repo_id, _, revision = text.partition("@")
    _check_repo(repo_id)
    if revision and (not _REVISION.match(revision) or ".." in revision):
        raise InvalidInputError(f"{revision!r} is not a revision (a branch, tag or commit)")
    return repo_id, revision or None


def _fetch(**kwargs: Any) -> str:
    from huggingface_hub import hf_hub_download

    return str(hf_hub_download(**kwargs))


def _snapshot(**kwargs: Any) -> str:
    from huggingface_hub import snapshot_download

    return str(snapshot_download(**kwargs))


def _file_size(repo_id: str, filename: str, revision: str | None, repo_type: str,
               endpoint: str | None) -> int | None:
    """The size the Hub gives for one file (None when it gives none), asked before the
    download: a file over the limit must not reach the server's disk at all."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    return get_hf_file_metadata(hf_hub_url(repo_id, filename, repo_type=repo_type,
                                           revision=revision, endpoint=endpoint)).size


def _snapshot_size(repo_id: str, revision: str | None, endpoint: str | None) -> int:
    """The total size of the files :func:`hub_snapshot` would download, from the Hub's
    listing of the repo."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
    wanted = filter_repo_objects(info.siblings or [], allow_patterns=list(MODEL_REPO_PATTERNS),
                                 key=lambda sibling: sibling.rfilename)
    return sum(sibling.size or 0 for sibling in wanted)


def _refuse_large(where: str, max_bytes: int, size_of: Callable[..., int | None],
                  *args: Any) -> None:
    """Refuse a download the Hub says is over ``max_bytes``. Best effort: when the Hub
    does not answer the question, the download itself reports why (after its retries), and
    what it fetched is measured once on disk."""
    try:
        size = size_of(*args)
    except Exception:  # unreachable, not found, an answer without sizes: the download says
        return
    if size is not None and size > max_bytes:
        raise PayloadTooLargeError(f"{where} takes {size} bytes; the limit is {max_bytes}",
                                   {"limit_bytes": max_bytes, "size_bytes": size})


def _status(exc: BaseException) -> int | None:
    """The HTTP status the Hub answered with, from ``exc`` or an exception it chains."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        status = getattr(getattr(current, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        current = current.__cause__ or current.__context__
    return None


def _cause(exc: BaseException) -> str:
    """The root cause of a failed fetch in a few words (the innermost exception)."""
    seen: set[int] = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unreachable(where: str, endpoint: str | None, cause: str) -> ServiceUnavailableError:
    hub = endpoint or "https://huggingface.co"
    what = "repo" if where.startswith("hf:") else "file"
    return ServiceUnavailableError(
        f"the Hugging Face Hub cannot be reached ({hub}: {cause}) to fetch {where}; try again "
        f"later, or set HF_HUB_OFFLINE=1 with the {what} in the local cache",
        {"kind": "hub_unreachable", "endpoint": hub, "retry_after_s": 60})


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _cache_dir() -> str | None:
    """The cache as the environment says now (``huggingface_hub`` reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


@contextmanager
def _hub_errors(where: str, endpoint: str | None, offline: bool) -> Iterator[None]:
    """Map ``huggingface_hub``'s exceptions onto ours (404 only when the Hub said so)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except LocalEntryNotFoundError as exc:
        # Not in the cache and the Hub was not asked (offline) or did not answer: the file
        # may well exist, so this is "try again", not "not found" -- unless the Hub (or a
        # mirror that sends no Hub error code) did answer 404.
        if _status(exc) == 404:
            raise NotFoundError(f"{where} was not found on the Hub",
                                {"kind": "hub_file", "error": "NotFound"}) from None
        if offline:
            raise _unreachable(where, endpoint, f"offline mode (HF_HUB_OFFLINE=1) and {where} "
                               "is not in the local cache") from None
        raise _unreachable(where, endpoint, _cause(exc)) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        # The Hub answered: no such repo, revision or file.
        raise NotFoundError(f"{where} was not found on the Hub",
                            {"kind": "hub_file", "error": type(exc).__name__}) from None
    except HFValidationError as exc:
        raise InvalidInputError(f"{where}: {str(exc).splitlines()[0][:300]}") from None
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status == 404:
            raise NotFoundError(f"{where} was not found on the Hub",
                                {"kind": "hub_file", "error": type(exc).__name__}) from None
        raise _unreachable(where, endpoint, f"HTTP {status}" if status else _cause(exc)) \
            from None
    except OfflineModeIsEnabled:
        raise _unreachable(where, endpoint, "offline mode (HF_HUB_OFFLINE=1)") from None
    except (InvalidInputError, NotFoundError, PayloadTooLargeError, ServiceUnavailableError):
        raise
    except Exception as exc:  # connection errors, timeouts, OSError and the like
        raise _unreachable(where, endpoint, _cause(exc)) from None


def hub_download(repo_id: str, filename: str, *, revision: str | None = None,
                 repo_type: Literal["model", "dataset"] = "model",
                 max_bytes: int | None = None) -> Path:
    """The local path of ``filename`` from ``repo_id`` (downloaded or from the cache).

    Raises:
        InvalidInputError: a malformed repo id or file name.
        NotFoundError: the Hub answered that there is no such repo, revision or file.
        PayloadTooLargeError: the file is larger than ``max_bytes``.
        ServiceUnavailableError: the Hub (or mirror) cannot be reached: connection errors,
            timeouts, server errors, or offline mode with the file not in the cache.
    """
    _check(repo_id, filename)
    offline = _offline()
    endpoint = os.environ.get("HF_ENDPOINT") or None
    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    with _hub_errors(where, endpoint, offline):
        if max_bytes is not None and not offline:
            _refuse_large(where, max_bytes, _file_size, repo_id, filename, revision,
                          repo_type, endpoint)
        path = Path(_fetch(repo_id=repo_id, filename=filename, revision=revision,
                           repo_type=repo_type, endpoint=endpoint, cache_dir=_cache_dir(),
                           local_files_only=offline))
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise PayloadTooLargeError(f"{where} is larger than the limit of {max_bytes} bytes",
                                   {"limit_bytes": max_bytes})
    return path


def hub_snapshot(repo_id: str, *, revision: str | None = None,
                 max_bytes: int | None = None) -> Path:
    """The local folder of a model repo's config, safetensors weights and tokenizer files
    (:data:`MODEL_REPO_PATTERNS`), downloaded or from the cache.

    Raises:
        InvalidInputError: a malformed repo id.
        NotFoundError: the Hub answered that there is no such repo or revision.
        PayloadTooLargeError: the files take more than ``max_bytes``.
        ServiceUnavailableError: the Hub (or mirror) cannot be reached, or offline mode with
            the repo not in the cache.
    """
    _check_repo(repo_id)
    offline = _offline()
    endpoint = os.environ.get("HF_ENDPOINT") or None
    where = f"hf:{repo_id}" + (f"@{revision}" if revision else "")
    with _hub_errors(where, endpoint, offline):
        if max_bytes is not None and not offline:
            _refuse_large(where, max_bytes, _snapshot_size, repo_id, revision, endpoint)
        folder = Path(_snapshot(repo_id=repo_id, revision=revision, endpoint=endpoint,
                                cache_dir=_cache_dir(), local_files_only=offline,
                                allow_patterns=list(MODEL_REPO_PATTERNS)))
    if max_bytes is not None:
        total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        if total > max_bytes:
            raise PayloadTooLargeError(f"{where} takes {total} bytes; the limit is "
                                       f"{max_bytes}", {"limit_bytes": max_bytes})
    return folder
