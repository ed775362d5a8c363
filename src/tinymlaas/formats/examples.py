"""Example inputs built from a model's input spec, for the checks that run a model without
data (registration, static analysis of PyTorch files).

Zeros of float32 are wrong for most real models: an embedding layer needs integer ids
below its vocabulary size, and a transformer needs an attention mask of ones (a mask of
zeros hides every token). So each input gets values of its own dtype and range:

- integer inputs named like ``*mask*``: ones;
- ``token_type_ids`` (and other ``*type_ids``): zeros;
- other integer inputs (token ids): ``0, 1, 2, ...`` modulo the vocabulary size found for
  that input (the embedding it feeds), or :data:`SAFE_ID_RANGE` when none is found;
- bool inputs: ``True`` (a mask);
- floats: zeros, as before.

Free dimensions take small values: the batch (the first dimension) 1, any other
:data:`EXAMPLE_SEQUENCE`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tinymlaas.domain import TensorSpec

__all__ = ["EXAMPLE_BATCH", "EXAMPLE_SEQUENCE", "SAFE_ID_RANGE", "check_onnx_runs", "example_array",
           "example_arrays", "hf_config_vocab", "onnx_vocab_sizes", "run_onnx_isolated"]

EXAMPLE_BATCH = 1
EXAMPLE_SEQUENCE = 16
#: Ids stay below this when the vocabulary size cannot be found.
SAFE_ID_RANGE = 100
#: ONNX operators an id input may pass through on its way to the Gather of an embedding.
_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity"}


def _dims(spec: TensorSpec, sizes: dict[str, int] | None = None) -> list[int]:
    sizes = sizes or {}
    dims = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim > 0:
            dims.append(dim)
        elif isinstance(dim, str) and dim in sizes:
            dims.append(sizes[dim])
        else:
            dims.append(EXAMPLE_BATCH if axis == 0 else EXAMPLE_SEQUENCE)
    return dims


def example_array(spec: TensorSpec, vocab: int | None = None,
                  sizes: dict[str, int] | None = None) -> np.ndarray:
    """A value for one input: its dtype, its shape (free dimensions from ``sizes`` by name,
    else small), values in the range the input's name and ``vocab`` call for."""
    dims = _dims(spec, sizes)
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError:
        dtype = np.dtype(np.float32)
    name = spec.name.lower()
    if dtype.kind == "b":
        return np.ones(dims, dtype)
    if dtype.kind not in "iu":
        return np.zeros(dims, dtype)
    if "mask" in name:
        return np.ones(dims, dtype)
    if name.endswith("type_ids"):
        return np.zeros(dims, dtype)
    high = max(1, min(vocab or SAFE_ID_RANGE, int(np.iinfo(dtype).max)))
    count = int(np.prod(dims))
    return (np.arange(count) % high).astype(dtype).reshape(dims)


def example_arrays(specs: list[TensorSpec], vocab: dict[str, int] | None = None,
                   sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """One example per input, by name (see :func:`example_array`)."""
    vocab = vocab or {}
    return {s.name: example_array(s, vocab.get(s.name), sizes) for s in specs}


def hf_config_vocab(metadata: dict[str, str]) -> int | None:
    """``vocab_size`` of the Hugging Face config kept in a model's metadata, if any."""
    from tinymlaas.formats.huggingface import kept_files

    try:
        config: Any = json.loads(kept_files(metadata).get("config.json", "") or "{}")
        value = config.get("vocab_size")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def onnx_vocab_sizes(model: Any) -> dict[str, int]:
    """For each graph input that indexes an initializer with ``Gather`` (an embedding
    table), possibly through casts and reshapes: the table's size along the gathered axis.
    Inputs with no such table get the vocabulary of the Hugging Face config kept in the
    metadata when there is one, if they look like ids."""
    import onnx

    tables = {t.name: list(t.dims) for t in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    sizes: dict[str, int] = {}
    for value in model.graph.input:
        if value.name in tables:
            continue
        frontier, seen = [value.name], {value.name}
        while frontier and value.name not in sizes:
            current = frontier.pop()
            for node in consumers.get(current, []):
                if node.op_type == "Gather" and len(node.input) > 1 \
                        and node.input[1] == current and node.input[0] in tables:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    dims = tables[node.input[0]]
                    if dims:
                        sizes[value.name] = int(dims[axis % len(dims)])
                        break
                if node.op_type in _PASS_THROUGH and node.input[0] == current:
                    for out in node.output:
                        if out not in seen:
                            seen.add(out)
                            frontier.append(out)
    config_vocab = hf_config_vocab({p.key: p.value for p in model.metadata_props})
    if config_vocab is not None:
        for value in model.graph.input:
            elem = value.type.tensor_type.elem_type
            if value.name not in sizes and value.name not in tables and "id" in \
                    value.name.lower() and elem in (onnx.TensorProto.INT64,
                                                    onnx.TensorProto.INT32):
                sizes[value.name] = config_vocab
    return sizes


def check_onnx_runs(path: Any, model: Any, specs: list[TensorSpec], *,
                    memory_mb: int = 8192, timeout_s: float = 300) -> None:
    """Run an ONNX model once on example inputs (:func:`example_arrays`, ids within the
    vocabulary its embeddings have), so a model ONNX Runtime cannot run is refused when it
    is registered rather than after every run's steps.

    The run happens in a child process under an address-space limit (``memory_mb``) and a
    CPU-time limit (``timeout_s``): the model is the user's, and a graph may ask for any
    amount of memory or time (a ``ConstantOfShape`` of 10^10 elements, a long ``Loop``),
    which in this process would take the server down with it.

    Raises:
        UnsupportedModelError: ONNX Runtime cannot load or run the model, or it needs more
            memory or time than allowed.
    """
    feed = example_arrays(specs, onnx_vocab_sizes(model))
    run_onnx_isolated(path, feed, memory_mb=memory_mb, timeout_s=timeout_s)


def run_onnx_isolated(path: Any, feed: dict[str, np.ndarray], *, memory_mb: int = 8192,
                      timeout_s: float = 300) -> list[np.ndarray]:
    """The outputs of an ONNX model on ``feed``, computed in a child process under an
    address-space limit (``memory_mb``) and a CPU-time limit (``timeout_s``).

    Raises:
        UnsupportedModelError: ONNX Runtime cannot load or run the model, or it needs more
            memory or time than allowed.
    """
    from tinymlaas.errors import UnsupportedModelError

    described = ", ".join(f"{n} {a.dtype}{list(a.shape)}" for n, a in feed.items())
    name = Path(str(path)).name
    cpu_s = max(1, math.ceil(timeout_s))
    with tempfile.TemporaryDirectory(prefix="tinymlaas-check-") as tmp:
        inputs, out = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(inputs, **feed)
        try:  # the child limits itself before it loads the model (no preexec_fn: threads)
            proc = subprocess.run(
                [sys.executable, "-m", "tinymlaas.formats.run_once", str(path), str(inputs),
                 str(memory_mb), str(cpu_s), str(out)],
                capture_output=True, text=True, timeout=timeout_s + 30, check=False)
        except subprocess.TimeoutExpired:
            proc = None
        if proc is not None and proc.returncode == 0:
            with np.load(out, allow_pickle=False) as arrays:
                return [arrays[f"output/{i}"] for i in range(len(arrays.files))]
    lines = (proc.stderr.strip().splitlines() if proc is not None else []) or [""]
    if proc is None or proc.returncode < 0 or not lines[-1]:
        reason = (f"it needs more than {memory_mb} MB of memory or {cpu_s} s of CPU time "
                  "(TINYMLAAS_STEP_MEMORY_MB, TINYMLAAS_STEP_TIMEOUT_S)")
    else:
        reason = lines[-1][:300]
    raise UnsupportedModelError(
        f"ONNX Runtime cannot run {name} on example inputs ({described}): {reason}")
