"""Hugging Face model folders: checked, exported to ONNX, with their tokenizer kept inside.

A model folder is what ``save_pretrained`` writes and what the Hub holds: ``config.json``,
weights in safetensors and the tokenizer's files. A Hugging Face cache folder
(``models--ORG--NAME`` with ``refs/`` and ``snapshots/``) works as well.

Safety: pickled ``.bin`` weights are refused (unpickling runs code from the file), and
``trust_remote_code`` is always off, so a config that needs the repo's own Python is refused
too. Only safetensors weights and JSON/text tokenizer files are read.

The export uses ``torch.onnx.export`` (the ``torch.export``-based exporter) with the inputs
the model's tokenizer produces (``input_ids``, ``attention_mask`` and ``token_type_ids``
when the model takes them), batch and sequence dynamic. The tokenizer files and the config
travel inside the ONNX file, in its metadata (:data:`HF_FILES_KEY`), so a model downloaded
from the platform is self-contained and a text dataset can be tokenized with the model's
own tokenizer later (:func:`model_tokenizer`).
"""

from __future__ import annotations

import base64
import inspect
import json
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinymlaas.domain import Task
from tinymlaas.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    UnsafeInputError,
    UnsupportedModelError,
)

__all__ = [
    "HF_FILES_KEY",
    "HF_SOURCE_KEY",
    "HfExport",
    "export_model_folder",
    "is_model_folder",
    "kept_files",
    "model_tokenizer",
    "resolve_model_folder",
]

#: ONNX metadata key of the tokenizer files and config (JSON: file name -> text, stored
#: deflated and in base64 after :data:`_DEFLATED`).
HF_FILES_KEY = "tinymlaas.hf.files"
#: Prefix of a deflated :data:`HF_FILES_KEY` (a tokenizer's JSON shrinks about 4x, and the
#: bytes count in every size ratio of the model).
_DEFLATED = "zlib+base64:"
#: ONNX metadata key of where the model came from (``hf:ORG/NAME@commit`` or a folder name).
HF_SOURCE_KEY = "tinymlaas.hf.source"
#: The inputs a text model may take, in the order a tokenizer usually returns them.
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Tokenizer files kept with the model: the fast tokenizer and its settings.
_KEPT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "config.json")
#: Largest tokenizer file kept with the model (a big multilingual tokenizer is ~20 MB).
_MAX_KEPT_BYTES = 64 * 1024**2
#: Largest the kept files may inflate to when read back.
_MAX_KEPT_TOTAL = 2 * _MAX_KEPT_BYTES
_EXAMPLE_BATCH, _EXAMPLE_SEQUENCE = 2, 8


@dataclass
class HfExport:
    """An exported model: the ONNX file, what it does and whether a tokenizer is inside."""

    path: Path
    task: Task
    architecture: str
    inputs: list[str]
    has_tokenizer: bool


def resolve_model_folder(folder: Path, revision: str | None = None) -> Path:
    """The folder holding ``config.json``: ``folder`` itself, or for a Hugging Face cache
    folder (``models--ORG--NAME``) the snapshot that ``revision`` (default ``main``) names.

    Raises:
        InvalidInputError: no config.json, or a cache folder without that revision.
    """
    folder = Path(folder)
    if (folder / "snapshots").is_dir() and not (folder / "config.json").is_file():
        ref = revision or "main"
        pointer = folder / "refs" / ref
        commit = pointer.read_text().strip() if pointer.is_file() else ref
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", commit) or commit in {".", ".."}:
            raise InvalidInputError(f"{folder.name}: revision {ref!r} is not in this cache "
                                    "folder")
        snapshot = folder / "snapshots" / commit
        if not snapshot.is_dir():
            found = ", ".join(p.name[:12] for p in (folder / "snapshots").iterdir())
            raise InvalidInputError(f"{folder.name}: revision {ref!r} is not in this cache "
                                    f"folder (snapshots: {found or 'none'})")
        folder = snapshot
    if not (folder / "config.json").is_file():
        raise InvalidInputError(f"{folder} is not a Hugging Face model folder: it has no "
                                "config.json (save the model with save_pretrained)")
    return folder


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` looks like a model folder or a cache folder (not a model file)."""
    return path.is_dir() and ((path / "config.json").is_file() or (path / "snapshots").is_dir())


def _check_weights(folder: Path, max_bytes: int) -> None:
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in folder.iterdir()
                         if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"})
        if pickled:
            raise UnsafeInputError(
                f"{folder.name} holds weights only as pickles ({', '.join(pickled[:3])}), which "
                "are refused because loading them runs code from the file; convert them to "
                "safetensors (model.save_pretrained(dir, safe_serialization=True)) or use a "
                "revision that has model.safetensors")
        raise InvalidInputError(f"{folder.name} has no safetensors weights (model.safetensors); "
                                "pickled .bin weights are refused because loading them runs "
                                "code, so the repo or folder needs a safetensors version")
    total = sum(p.stat().st_size for p in weights)
    if total > max_bytes:
        raise PayloadTooLargeError(f"the weights take {total} bytes; the limit is {max_bytes}",
                                   {"limit_bytes": max_bytes})


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _load(folder: Path) -> tuple[Any, Any, Any | None, Task]:
    """Config, model (eval mode) and tokenizer (None without tokenizer files), and the task
    the architecture implies."""
    import transformers
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    transformers.logging.set_verbosity_error()
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False,
                                            local_files_only=True)
    except Exception as exc:  # remote code refused, unknown model type, bad JSON, ...
        raise UnsupportedModelError(f"{folder.name}/config.json cannot be used: "
                                    f"{_first_line(exc)}") from None
    architecture = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    task = Task.embedding
    factory: Any = AutoModel
    if str(architecture).endswith("ForSequenceClassification"):
        factory = AutoModelForSequenceClassification
        task = Task.regression if getattr(config, "num_labels", 2) == 1 else \
            Task.classification
    try:
        model = factory.from_pretrained(folder, config=config, trust_remote_code=False,
                                        use_safetensors=True, local_files_only=True)
    except Exception as exc:
        raise UnsupportedModelError(f"the {architecture} model in {folder.name} cannot be "
                                    f"loaded: {_first_line(exc)}") from None
    model.eval()
    tokenizer = None
    if any((folder / name).is_file() for name in
           ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")):
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False,
                                                      local_files_only=True)
        except Exception as exc:
            raise UnsupportedModelError(f"the tokenizer in {folder.name} cannot be loaded: "
                                        f"{_first_line(exc)}") from None
    return config, model, tokenizer, task


def _input_names(model: Any, tokenizer: Any | None) -> list[str]:
    """The text inputs the tokenizer makes and the model's forward takes, in the order
    input_ids, attention_mask, token_type_ids."""
    accepted = set(inspect.signature(model.forward).parameters)
    wanted = list(getattr(tokenizer, "model_input_names", None) or _TEXT_INPUTS)
    names = [n for n in _TEXT_INPUTS if n in wanted and n in accepted]
    if "input_ids" not in names:
        raise UnsupportedModelError(f"{type(model).__name__} does not take input_ids; only "
                                    "text models (token ids in) are imported from a folder")
    return names


def _flat(model: Any, names: list[str]) -> Any:
    """``model`` with a forward that takes the text inputs by name and returns a tuple of
    tensors (the ``ModelOutput`` fields that are set), as the exporter needs."""
    import torch

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
            given = {"input_ids": input_ids, "attention_mask": attention_mask,
                     "token_type_ids": token_type_ids}
            out = self.model(**{n: given[n] for n in names}, return_dict=True)
            return tuple(v for v in out.values() if isinstance(v, torch.Tensor))

    return Flat().eval()


def _keep_files(folder: Path, tokenizer: Any | None) -> dict[str, str]:
    """The tokenizer (saved again, so a slow one becomes ``tokenizer.json``) and config."""
    kept: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        sources = [Path(tmp) / n for n in _KEPT_FILES if n != "config.json"]
        sources.append(folder / "config.json")
        for path in sources:
            if not path.is_file() or path.stat().st_size > _MAX_KEPT_BYTES:
                continue
            try:
                kept[path.name] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
    return kept


def _encode_files(files: dict[str, str]) -> str:
    import zlib

    return _DEFLATED + base64.b64encode(zlib.compress(json.dumps(files).encode(), 9)).decode()


def kept_files(metadata: dict[str, str]) -> dict[str, str]:
    """The tokenizer files and config kept in a model's ONNX metadata (``{}`` when there
    are none or they do not decode; inflated to at most a bound, so that a crafted file
    cannot fill the memory)."""
    import binascii
    import zlib

    value = metadata.get(HF_FILES_KEY, "") or "{}"
    try:
        if value.startswith(_DEFLATED):
            inflater = zlib.decompressobj()
            raw = inflater.decompress(base64.b64decode(value[len(_DEFLATED):], validate=True),
                                      _MAX_KEPT_TOTAL)
            if inflater.unconsumed_tail:
                return {}
            value = raw.decode()
        files = json.loads(value)
    except (ValueError, binascii.Error, zlib.error, UnicodeDecodeError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {str(k): v for k, v in files.items() if isinstance(v, str)}


def export_model_folder(folder: Path, out: Path, *, source: str, max_bytes: int,
                        opset: int = 18) -> HfExport:
    """Export the model in ``folder`` to ``out`` (one self-contained ONNX file) with its
    tokenizer and config in the metadata.

    Raises:
        UnsafeInputError: the weights are only pickles.
        UnsupportedModelError: a config that needs remote code, a model that is not a text
            model, or an export failure.
        PayloadTooLargeError: weights over ``max_bytes``.
    """
    import onnx
    import torch

    from tinymlaas.formats.models import strip_node_metadata

    _check_weights(folder, max_bytes)
    config, model, tokenizer, task = _load(folder)
    names = _input_names(model, tokenizer)
    vocab = int(getattr(config, "vocab_size", 2) or 2)
    positions = int(getattr(config, "max_position_embeddings", 512) or 512)
    sequence = max(2, min(_EXAMPLE_SEQUENCE, positions - 2))
    example = tuple(
        torch.ones(_EXAMPLE_BATCH, sequence, dtype=torch.long) if name == "attention_mask"
        else (torch.arange(_EXAMPLE_BATCH * sequence).reshape(_EXAMPLE_BATCH, sequence)
              % min(vocab, 100) if name == "input_ids"
              else torch.zeros(_EXAMPLE_BATCH, sequence, dtype=torch.long))
        for name in names)
    flat = _flat(model, names)
    with torch.no_grad():
        result = model(**dict(zip(names, example, strict=True)), return_dict=True)
    outputs = [k for k, v in result.items() if isinstance(v, torch.Tensor)]
    batch = torch.export.Dim("batch", min=1, max=2**16)
    seq = torch.export.Dim("sequence", min=1, max=max(2, positions))
    dynamic = {name: {0: batch, 1: seq} for name in names}
    try:
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
            # the exporter's notes on axis names and deprecations are not the user's concern
            warnings.simplefilter("ignore")
            raw = Path(tmp) / "model.onnx"
            torch.onnx.export(flat, example, str(raw), input_names=names, output_names=outputs,
                              dynamic_shapes=dynamic, opset_version=opset, dynamo=True,
                              external_data=False, optimize=True, verbose=False)
            exported = onnx.load(str(raw))
    except Exception as exc:
        raise UnsupportedModelError(f"exporting {type(model).__name__} to ONNX failed: "
                                    f"{_first_line(exc)}") from None
    strip_node_metadata(exported.graph)
    kept = _keep_files(folder, tokenizer)
    for key, value in ((HF_FILES_KEY, _encode_files(kept)), (HF_SOURCE_KEY, source)):
        entry = exported.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(exported, str(out))
    architecture = str((getattr(config, "architectures", None) or [type(model).__name__])[0])
    return HfExport(path=out, task=task, architecture=architecture, inputs=names,
                    has_tokenizer=tokenizer is not None)


def model_tokenizer(onnx_path: Path) -> Any:
    """The tokenizer kept in a model's ONNX metadata.

    Raises:
        InvalidInputError: the model has no tokenizer (it was not imported from a Hugging
            Face folder or repo), or the kept files do not load.
    """
    import onnx

    from transformers import AutoTokenizer

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise InvalidInputError(f"the model file cannot be read: {_first_line(exc)}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    del model
    files = kept_files(meta)
    if not any(n.startswith("tokenizer") for n in files):
        raise InvalidInputError("the model has no tokenizer: import it from a Hugging Face "
                                "repo or folder (tinymlaas models add hf:ORG/NAME or DIR), or "
                                "tokenize the text yourself into an NPZ with one array per "
                                "model input")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            if name in _KEPT_FILES and isinstance(text, str):
                (Path(tmp) / name).write_text(text, encoding="utf-8")
        try:
            tokenizer = AutoTokenizer.from_pretrained(tmp, trust_remote_code=False,
                                                      local_files_only=True)
        except Exception as exc:
            raise InvalidInputError(f"the model's tokenizer cannot be loaded: "
                                    f"{_first_line(exc)}") from None
    positions = _max_positions(files.get("config.json"))
    limit = getattr(tokenizer, "model_max_length", None)
    if positions is not None and (not isinstance(limit, int) or limit > positions):
        # many tokenizers leave it unset (a huge number); the model's positions are the bound
        tokenizer.model_max_length = positions
    return tokenizer


def _max_positions(config_text: Any) -> int | None:
    """The most tokens the model's position embeddings take, from its ``config.json``."""
    try:
        config = json.loads(config_text) if isinstance(config_text, str) else None
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
