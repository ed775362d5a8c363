"""Text datasets: a CSV or JSONL file of text, tokenized at registration with a model's
tokenizer into the canonical multi-input form (one int64 array per model input).

Each row holds a text (``text_column``), optionally a second text (``text_pair_column``,
for sentence pairs) and optionally a label (``label_column``). Labels given as text are
class names; numbers follow the same rules as other datasets (whole numbers with few
distinct values mean classification, otherwise regression). Without a label column the
dataset is unlabelled (task ``embedding``): good for calibration and for fidelity against
the original model.

Bounded in time and memory: the file is read row by row; a field longer than
:data:`MAX_TEXT_CHARS`, a JSONL line longer than :data:`MAX_LINE_BYTES`, more than
:data:`MAX_TEXT_ROWS` rows or token arrays larger than the dataset size limit are refused
with the line they were found on. Rows are tokenized in batches.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tinymlaas.domain import Task
from tinymlaas.errors import InvalidInputError, PayloadTooLargeError
from tinymlaas.formats.datasets import LoadedDataset, finish_dataset

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_TEXT_LENGTH",
    "MAX_TEXT_ROWS",
    "TEXT_SUFFIXES",
    "TextOptions",
    "tokenize_text_file",
]

#: Most rows of one text dataset.
MAX_TEXT_ROWS = 1_000_000
#: Longest text field, in characters (longer texts are truncated by tokens anyway).
MAX_TEXT_CHARS = 100_000
#: Longest JSONL line, in bytes.
MAX_LINE_BYTES = 1024**2
#: Largest ``max_length`` in tokens.
MAX_TEXT_LENGTH = 8192
#: File suffixes read as text tables.
TEXT_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_BATCH = 1024


@dataclass(frozen=True)
class TextOptions:
    """How to tokenize a text dataset.

    Attributes:
        tokenizer: The registered model (id or name) whose tokenizer is used; its inputs
            name the arrays.
        text_column: The column (CSV header or JSONL key) holding the text.
        text_pair_column: A second text per row, for models that take sentence pairs.
        max_length: Tokens per sample; longer texts are truncated.
        padding: ``max_length`` pads every sample to ``max_length``; ``longest`` to the
            longest sample of the file (at most ``max_length``).
    """

    tokenizer: str
    text_column: str = "text"
    text_pair_column: str | None = None
    max_length: int = 128
    padding: Literal["max_length", "longest"] = "max_length"

    def __post_init__(self) -> None:
        if not 2 <= self.max_length <= MAX_TEXT_LENGTH:
            raise InvalidInputError(f"max_length must be 2 to {MAX_TEXT_LENGTH} tokens; got "
                                    f"{self.max_length}")
        if self.padding not in ("max_length", "longest"):
            raise InvalidInputError(f"padding must be max_length or longest; got "
                                    f"{self.padding!r}")
        for column in (self.text_column, self.text_pair_column):
            if column is not None and not 1 <= len(column) <= 200:
                raise InvalidInputError("a column name is 1 to 200 characters")


Row = tuple[str, str | None, Any]


def _field(value: Any, column: str, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: {column!r} must be text; got "
                                f"{type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidInputError(f"{where}: {column!r} holds {len(value)} characters; the "
                                f"limit is {MAX_TEXT_CHARS}")
    return value


def _missing(path: Path, column: str, found: list[str]) -> InvalidInputError:
    shown = ", ".join(str(c)[:40] for c in found[:50]) or "none"
    return InvalidInputError(f"column {column[:100]!r} is not in {path.name}; columns: {shown}",
                             {"column": column[:100], "columns": [str(c)[:40] for c in found[:50]]})


def _csv_rows(path: Path, options: TextOptions, label: str | None) -> Iterator[Row]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    csv.field_size_limit(MAX_TEXT_CHARS + 1)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if not header:
                raise InvalidInputError(f"{path.name} is empty: it needs a header row and at "
                                        "least one data row")
            wanted = [options.text_column, options.text_pair_column, label]
            for column in wanted:
                if column is not None and column not in header:
                    raise _missing(path, column, header)
            text, pair, lab = (header.index(c) if c is not None else None for c in wanted)
            for row in reader:
                if not row:
                    continue
                where = f"{path.name} line {reader.line_num}"
                if len(row) != len(header):
                    raise InvalidInputError(f"{where} has {len(row)} fields; the header has "
                                            f"{len(header)}")
                yield (_field(row[text], options.text_column, where),  # type: ignore[index]
                       None if pair is None else _field(row[pair], str(options.text_pair_column),
                                                        where),
                       None if lab is None else row[lab])
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path.name} is not UTF-8 text") from exc
    except csv.Error as exc:
        raise InvalidInputError(f"{path.name} is not a readable CSV file (a field longer than "
                                f"{MAX_TEXT_CHARS} characters, or bad quoting): {exc}") from exc


def _jsonl_rows(path: Path, options: TextOptions, label: str | None) -> Iterator[Row]:
    with path.open("rb") as fh:
        number = 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            where = f"{path.name} line {number}"
            if len(raw) > MAX_LINE_BYTES:
                raise InvalidInputError(f"{where} is longer than {MAX_LINE_BYTES} bytes")
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise InvalidInputError(f"{where} is not a JSON object: "
                                        f"{str(exc).splitlines()[0][:200]}") from None
            if not isinstance(record, dict):
                raise InvalidInputError(f"{where} is not a JSON object (one per line, e.g. "
                                        '{"text": "...", "label": 1})')
            for column in (options.text_column, options.text_pair_column, label):
                if column is not None and column not in record:
                    raise _missing(path, column, list(record)) if number == 1 else \
                        InvalidInputError(f"{where} has no {column[:100]!r}")
            value = record.get(label) if label is not None else None
            if label is not None and not isinstance(value, str | int | float | bool):
                raise InvalidInputError(f"{where}: label {label!r} must be a number or text")
            yield (_field(record[options.text_column], options.text_column, where),
                   None if options.text_pair_column is None else
                   _field(record[options.text_pair_column], options.text_pair_column, where),
                   value)


def _labels(values: list[Any], path: Path) -> np.ndarray:
    """Numbers when every label is one (text of a number counts), else class names."""
    numbers: list[float] = []
    for value in values:
        if isinstance(value, bool):
            numbers.append(float(value))
            continue
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            break
    else:
        return np.array(numbers, dtype=np.float64)
    names = [str(v) for v in values]
    if any(not n for n in names):
        raise InvalidInputError(f"{path.name}: a label is empty")
    return np.array(names, dtype=str)


def _encode(tokenizer: Any, texts: list[str], pairs: list[str] | None, names: list[str],
            options: TextOptions) -> dict[str, np.ndarray]:
    try:
        encoded = tokenizer(texts, pairs, truncation=True, max_length=options.max_length,
                            padding="max_length", return_tensors="np",
                            return_attention_mask=True,
                            return_token_type_ids="token_type_ids" in names)
    except Exception as exc:  # a tokenizer without a pad token, bad settings, ...
        raise InvalidInputError(f"the model's tokenizer failed: "
                                f"{(str(exc).splitlines() or [type(exc).__name__])[0][:300]}"
                                ) from None
    return {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}


def tokenize_text_file(path: Path, tokenizer: Any, input_names: list[str],
                       options: TextOptions, *, label_column: str | None = None,
                       task: Task | None = None, max_bytes: int,
                       max_classes: int) -> LoadedDataset:
    """Tokenize a CSV/JSONL text file into one int64 array per model input.

    Args:
        path: The file (.csv, .tsv, .jsonl or .ndjson).
        tokenizer: A Hugging Face tokenizer (the model's own).
        input_names: The model's inputs; each must be made by the tokenizer.
        options: Columns, max_length and padding.
        label_column: The label column, if the dataset is labelled.
        task: The task (default: inferred from the labels; ``embedding`` without labels).
        max_bytes: Most bytes of the file and of the token arrays.
        max_classes: Most classes of text labels.

    Raises:
        InvalidInputError: a missing column, an empty file, a field or line too long, an
            input the tokenizer does not make, bad labels, a ``max_length`` over the
            tokenizer's ``model_max_length`` (the model's positions).
        PayloadTooLargeError: the file or the token arrays over ``max_bytes``, or too many
            rows.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise PayloadTooLargeError(f"{path.name} is {size} bytes; the limit is {max_bytes}")
    kind = TEXT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(f"{path.name}: a text dataset is a .csv, .tsv or .jsonl file")
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 2 <= limit < options.max_length:
        raise InvalidInputError(f"max_length {options.max_length} is more tokens than the "
                                f"model takes ({limit}, its position embeddings); use a "
                                f"max_length of at most {limit}", {"field": "max_length"})
    if getattr(tokenizer, "pad_token", "") is None:
        fallback = getattr(tokenizer, "eos_token", None)
        if fallback is None:
            raise InvalidInputError("the model's tokenizer has no padding token")
        tokenizer.pad_token = fallback
    rows = _csv_rows(path, options, label_column) if kind == "csv" else \
        _jsonl_rows(path, options, label_column)
    per_row = options.max_length * len(input_names) * 8
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in input_names}
    masks: list[np.ndarray] = []
    labels: list[Any] = []
    count = 0
    batch: list[Row] = []

    def flush() -> None:
        texts = [r[0] for r in batch]
        pairs = [r[1] or "" for r in batch] if options.text_pair_column else None
        encoded = _encode(tokenizer, texts, pairs, input_names, options)
        for name in input_names:
            if name not in encoded:
                raise InvalidInputError(
                    f"the model takes {name!r}, which its tokenizer does not make (it makes "
                    f"{', '.join(encoded)})", {"input": name})
            chunks[name].append(encoded[name])
        masks.append(encoded.get("attention_mask", np.ones_like(encoded["input_ids"])))
        labels.extend(r[2] for r in batch)
        batch.clear()

    for row in rows:
        count += 1
        if count > MAX_TEXT_ROWS:
            raise PayloadTooLargeError(f"{path.name} has more than {MAX_TEXT_ROWS} rows")
        if count * per_row > max_bytes:
            raise PayloadTooLargeError(
                f"{path.name}: {count} rows of {options.max_length} tokens take more than "
                f"{max_bytes} bytes; use a smaller max_length or fewer rows",
                {"limit_bytes": max_bytes})
        batch.append(row)
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    if count == 0:
        raise InvalidInputError(f"{path.name} has no rows of text")
    arrays = {name: np.concatenate(parts) for name, parts in chunks.items()}
    if options.padding == "longest":
        longest = max(1, int(np.concatenate(masks).sum(axis=1).max()))
        left = getattr(tokenizer, "padding_side", "right") == "left"
        arrays = {k: (v[:, -longest:] if left else v[:, :longest]) for k, v in arrays.items()}
    X = np.empty(count, dtype=[(n, np.int64, a.shape[1:]) for n, a in arrays.items()])
    for name, values in arrays.items():
        X[name] = values
    if label_column is None:
        if task not in (None, Task.embedding):
            raise InvalidInputError(f"{path.name}: a {task.value} dataset needs labels; give "
                                    "the label column")
        return LoadedDataset(X=X, y=np.zeros(count, np.float32), task=Task.embedding,
                             class_names=[], source_format="text")
    data = finish_dataset(X, _labels(labels, path), task, None, "text",
                          max_classes=max_classes, named_inputs=True)
    return data
