"""Running models the same way everywhere: ONNX Runtime for ONNX, torch for PyTorch files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tinymlaas.domain import ArtifactKind, TensorSpec
from tinymlaas.errors import InvalidInputError

__all__ = ["Runner", "fit_to_input", "input_feed", "open_runner"]


def fit_to_input(X: np.ndarray, shape: list[int | str], dtype: str = "float32") -> np.ndarray:
    """Reshape samples ``X`` (samples first) to a model input ``shape`` (batch first).

    Works when each sample has as many elements as the input expects (e.g. 8x8 images fed to
    a 64-feature input, or NCHW data to an NHWC model with one channel).
    """
    if X.dtype.names is not None:
        raise InvalidInputError(
            f"the dataset holds one array per model input ({', '.join(X.dtype.names)}); such "
            "datasets feed ONNX models (evaluation, ONNX Runtime steps, quantize-static), not "
            "this step or runtime, which takes one array X")
    if any(not isinstance(d, int) or d <= 0 for d in shape[1:]):
        return X.astype(dtype, copy=False)
    sample = [int(d) for d in shape[1:]]
    expected = int(np.prod(sample))
    per_sample = int(np.prod(X.shape[1:]))
    if per_sample != expected:
        raise InvalidInputError(f"dataset samples have shape {list(X.shape[1:])} "
                                f"({per_sample} values) but the model input {shape} needs "
                                f"{expected} values per sample")
    if list(X.shape[1:]) == sample:
        return X.astype(dtype, copy=False)
    if X.ndim == 4 and len(sample) == 3 and sample[-1] == X.shape[1] and sample[0] == X.shape[2]:
        X = X.transpose(0, 2, 3, 1)  # NCHW data, NHWC model
    return X.reshape(len(X), *sample).astype(dtype, copy=False)


def input_feed(X: np.ndarray, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """One array per model input, samples first, in the input's dtype.

    A dataset with several inputs holds ``X`` as a structured array with one field per
    input, named after it (integer ids stay integers); a plain ``X`` feeds a model with
    one input.

    Raises:
        InvalidInputError: an input the samples do not hold.
    """
    names = X.dtype.names
    if names is None:
        if len(specs) > 1:
            raise InvalidInputError(
                f"the model takes {len(specs)} inputs ({', '.join(s.name for s in specs)}) "
                "but the dataset holds one array X; give an NPZ with one array per input, "
                "named after it")
        return {specs[0].name: fit_to_input(X, specs[0].shape, specs[0].dtype)}
    missing = [s.name for s in specs if s.name not in names]
    if missing:
        raise InvalidInputError(f"the dataset has no array for model input {missing[0]!r}; "
                                f"it holds {', '.join(names)}", {"missing": missing})
    return {s.name: fit_to_input(np.ascontiguousarray(X[s.name]), s.shape, s.dtype)
            for s in specs}


def fixed_batch(specs: list[TensorSpec]) -> int:
    """The batch a model takes at a time: 1 when its batch dimension is dynamic, else the
    fixed one it was exported with (a torch.export archive keeps its example's)."""
    batch = specs[0].shape[0] if specs and specs[0].shape else 1
    return int(batch) if isinstance(batch, int) and batch > 0 else 1


def pad_batch(feed: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """``feed`` with its samples padded to a multiple of ``batch`` (copies of the last)."""
    count = len(next(iter(feed.values()))) if feed else 0
    short = -count % batch
    if not short or not count:
        return feed
    return {name: np.concatenate([a, np.repeat(a[-1:], short, axis=0)])
            for name, a in feed.items()}


class Runner(Protocol):
    inputs: list[TensorSpec]
    #: Where the model runs: ``onnxruntime``, ``torch`` or ``c`` (the generated C built for
    #: this host); figures of two runtimes are never set against each other.
    runtime: str

    def prepare(self, X: np.ndarray) -> Any: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def time_one(self, x: Any) -> float: ...


class OnnxRunner:
    """ONNX Runtime, CPU, one thread, sequential execution (comparable latency)."""

    runtime = "onnxruntime"

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        from tinymlaas.formats.models import onnx_tensor_specs

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        init = {i.name for i in model.graph.initializer}
        self.inputs = onnx_tensor_specs([i for i in model.graph.input if i.name not in init])
        batch = self.inputs[0].shape[0] if self.inputs[0].shape else 1
        self._dynamic_batch = not isinstance(batch, int) or batch <= 0
        #: a model exported with a fixed batch takes exactly that many samples at a time
        self._batch = fixed_batch(self.inputs)

    def prepare(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The feed of every input (see :func:`input_feed`); for a fixed batch of B, the
        samples padded to a multiple of B with copies of the last one."""
        return pad_batch(input_feed(X, self.inputs), self._batch)

    def predict(self, X: np.ndarray) -> np.ndarray:
        feed = self.prepare(X)
        step = 256 if self._dynamic_batch else self._batch
        outs = [self.session.run(None, {name: a[i:i + step] for name, a in feed.items()})[0]
                for i in range(0, len(X), step)]
        return np.concatenate(outs)[:len(X)].astype(np.float32)

    def time_one(self, x: dict[str, np.ndarray]) -> float:
        start = time.perf_counter()
        self.session.run(None, x)
        return time.perf_counter() - start


class TorchRunner:
    """PyTorch on the CPU with one thread, for torch.export archives and TorchScript."""

    runtime = "torch"

    def __init__(self, path: Path, kind: ArtifactKind, inputs: list[TensorSpec]) -> None:
        import torch

        from tinymlaas.formats.torch_models import load_torch_module

        torch.set_num_threads(1)
        self._torch = torch
        self.module = load_torch_module(path, kind)
        self.inputs = inputs

    def prepare(self, X: np.ndarray) -> list[np.ndarray]:
        """One array per tensor input, in the input's dtype (integer ids stay integers)."""
        return list(input_feed(X, self.inputs).values())

    def _first_output(self, out: object) -> np.ndarray:
        from tinymlaas.formats.torch_models import output_tensors

        leaves = output_tensors(out)
        if not leaves:
            raise InvalidInputError(f"the model returned no tensor ({type(out).__name__})")
        return leaves[0][1].numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        feed = self.prepare(X)
        with self._torch.no_grad():
            outs = [self._first_output(self.module(*[self._torch.from_numpy(a[i:i + 256])
                                                     for a in feed]))
                    for i in range(0, len(X), 256)]
        return np.concatenate(outs).astype(np.float32)

    def time_one(self, x: list[np.ndarray]) -> float:
        tensors = [self._torch.from_numpy(a) for a in x]
        with self._torch.no_grad():
            start = time.perf_counter()
            self.module(*tensors)
            return time.perf_counter() - start


class CRunner:
    """Generated C (a ``c-source`` directory) built for this machine and called via ctypes.

    Float inputs are quantized with the model's input scale and zero point when the C API
    takes int8, and int8 outputs are dequantized, so it is measured like any other model.
    """

    runtime = "c"

    def __init__(self, directory: Path) -> None:
        from tinymlaas.compiler import HostModel

        self.model = HostModel(directory)
        self.result = self.model.result
        spec = self.result.inputs[0]
        self.inputs = [TensorSpec(name=spec.name, shape=list(spec.shape), dtype=spec.dtype)]

    def prepare(self, X: np.ndarray) -> np.ndarray:
        spec = self.result.inputs[0]
        X = fit_to_input(X, ["N", *spec.shape[1:]], "float32")
        if np.dtype(spec.dtype).kind in "iu":
            info = np.iinfo(np.dtype(spec.dtype))
            q = np.round(X / (spec.scale or 1.0)) + (spec.zero_point or 0)
            return np.clip(q, info.min, info.max).astype(spec.dtype)
        return X.astype(spec.dtype)

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self.model.run(self.prepare(X)))
        spec = self.result.outputs[0]
        if np.dtype(spec.dtype).kind in "iu":
            return ((out.astype(np.float32) - (spec.zero_point or 0)) * (spec.scale or 1.0))
        return out.astype(np.float32)

    def time_one(self, x: np.ndarray) -> float:
        start = time.perf_counter()
        self.model.run(x)
        return time.perf_counter() - start


def open_runner(path: Path, kind: ArtifactKind, inputs: list[TensorSpec] | None = None) -> Runner:
    if kind is ArtifactKind.onnx:
        return OnnxRunner(path)
    if kind in {ArtifactKind.torch_exported, ArtifactKind.torchscript}:
        return TorchRunner(path, kind, inputs or [])
    if kind is ArtifactKind.c_source:
        return CRunner(path)
    raise InvalidInputError(f"artifacts of kind {kind} cannot be evaluated")
