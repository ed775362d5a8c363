"""Build generated C on the host and call it from Python.

:class:`HostModel` compiles the sources with the system C compiler into a shared library
(``cc -O2 -shared -fPIC``), loads it with :mod:`ctypes` and runs it on numpy arrays. It is
how the compiler's output is verified against ONNX Runtime, and how the benchmark times it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tinymlaas.compiler.api import CompileResult
from tinymlaas.errors import InvalidInputError, ServiceUnavailableError, StepFailedError

__all__ = ["DEFAULT_CFLAGS", "HostModel", "build_host", "find_cc"]

DEFAULT_CFLAGS = ("-O2", "-std=c99", "-fPIC")


def find_cc() -> str:
    """The host C compiler (``$CC``, else ``cc``)."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise ServiceUnavailableError(
            f"No C compiler {cc!r} found; install gcc (Debian: apt-get install gcc) or set CC."
        )
    return cc


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StepFailedError(
            f"C compilation failed: {' '.join(command[:4])} ...\n{proc.stderr[-4000:]}",
            {"command": command, "stderr": proc.stderr[-4000:]},
        )


def build_host(
    results: list[CompileResult],
    library: str | Path,
    *,
    cflags: tuple[str, ...] = DEFAULT_CFLAGS,
    jobs: int | None = None,
) -> Path:
    """Compile one or more generated models into a single shared library.

    Every generated symbol except ``<name>_run`` is ``static``, so models with distinct
    names link together (the conformance suite builds hundreds of them at once).

    Args:
        results: Compiled models (distinct names).
        library: Path of the ``.so`` to write.
        cflags: Compiler flags; ``-shared`` is added for the link.
        jobs: Parallel compiler processes (default: CPU count).

    Returns:
        The library path.
    """
    cc = find_cc()
    library = Path(library)
    library.parent.mkdir(parents=True, exist_ok=True)
    objects = [library.parent / f"{r.name}.o" for r in results]
    commands = [
        [cc, *cflags, "-c", str(r.source), "-I", str(r.directory), "-o", str(o)]
        for r, o in zip(results, objects, strict=True)
    ]
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        list(pool.map(_run, commands))
    _run([cc, *cflags, "-shared", "-o", str(library), *map(str, objects), "-lm"])
    return library


class HostModel:
    """A compiled model running on this machine.

    Args:
        compiled: A :class:`CompileResult` or the directory :func:`compile_onnx` wrote.
        library: An already built library holding the model (see :func:`build_host`);
            built into a private temporary directory when omitted.
        cflags: Compiler flags for that build.
    """

    def __init__(
        self,
        compiled: CompileResult | str | Path,
        *,
        library: str | Path | None = None,
        cflags: tuple[str, ...] = DEFAULT_CFLAGS,
    ) -> None:
        self.result = (
            compiled if isinstance(compiled, CompileResult) else CompileResult.read_meta(compiled)
        )
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if library is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tinymlaas-host-")
            library = build_host([self.result], Path(self._tmp.name) / "model.so", cflags=cflags)
        self.library = Path(library)
        self._lib = ctypes.CDLL(str(self.library))
        name = self.result.name
        self._fn = getattr(self._lib, f"{name}_run")
        count = len(self.result.inputs) + len(self.result.outputs)
        self._fn.argtypes = [ctypes.c_void_p] * count
        self._fn.restype = ctypes.c_int
        #: Arena addresses of the inputs and outputs (``io="arena"``), else empty.
        self.io_pointers: tuple[list[int], list[int]] = ([], [])
        if self.result.io == "arena":
            self._invoke = getattr(self._lib, f"{name}_invoke")
            self._invoke.argtypes, self._invoke.restype = [], ctypes.c_int
            self.io_pointers = tuple(  # type: ignore[assignment]
                [self._accessor(f"{name}_{kind}{i}") for i in range(len(specs))]
                for kind, specs in (("input", self.result.inputs),
                                    ("output", self.result.outputs)))

    def _accessor(self, symbol: str) -> int:
        fn = getattr(self._lib, symbol)
        fn.argtypes, fn.restype = [], ctypes.c_void_p
        return int(fn())

    def close(self) -> None:
        """Remove the private build directory (the library stays loaded)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __del__(self) -> None:
        self.close()

    def _prepare(self, arrays: tuple[np.ndarray, ...]) -> tuple[list[np.ndarray], int, bool]:
        specs = self.result.inputs
        if len(arrays) != len(specs):
            raise InvalidInputError(f"The model takes {len(specs)} input(s), got {len(arrays)}.")
        batch, looped = 1, False
        prepared = []
        for array, spec in zip(arrays, specs, strict=True):
            array = np.asarray(array)
            dtype = np.dtype(spec.dtype)
            if array.dtype != dtype:
                if dtype.kind == "f" and array.dtype.kind in "fiu":
                    array = array.astype(dtype)
                else:
                    raise InvalidInputError(
                        f"Input {spec.name!r} must be {dtype.name}, got {array.dtype.name}."
                    )
            shape = tuple(spec.shape)
            if array.shape == shape:
                prepared.append(np.ascontiguousarray(array).reshape(1, *shape))
                continue
            batched = array.ndim == len(shape) and array.shape[1:] == shape[1:]
            if shape and shape[0] == 1 and batched:
                batch, looped = array.shape[0], True
                prepared.append(np.ascontiguousarray(array))
                continue
            raise InvalidInputError(
                f"Input {spec.name!r} must have shape {list(shape)} (or any batch size), "
                f"got {list(array.shape)}."
            )
        if any(p.shape[0] != batch for p in prepared):
            raise InvalidInputError("All inputs must have the same batch size.")
        return prepared, batch, looped

    def run(self, *inputs: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        """Run the model; a batch dimension larger than the compiled one is looped over.

        Args:
            *inputs: One array per model input, of the compiled shape, or with a larger
                first dimension when the model was compiled with batch 1.

        Returns:
            The output array (a tuple when the model has several outputs).
        """
        prepared, batch, looped = self._prepare(inputs)
        outs = []
        for spec in self.result.outputs:
            shape = tuple(spec.shape)
            lead = (batch, *shape[1:]) if looped else (1, *shape)
            outs.append(np.zeros(lead, dtype=np.dtype(spec.dtype)))
        for b in range(batch):
            sources = [p[b : b + 1] for p in prepared]
            targets = [o[b : b + 1] for o in outs]
            status = self._invoke_once(sources, targets)
            if status != 0:
                raise StepFailedError(f"{self.result.name}_run returned {status}.")
        results = [o if looped else o[0] for o in outs]
        return results[0] if len(results) == 1 else tuple(results)

    def _invoke_once(self, sources: list[np.ndarray], targets: list[np.ndarray]) -> int:
        """One inference: through the arena's input and output slots when the model keeps
        them there (the generated API a device uses), else on the arrays themselves."""
        if self.result.io != "arena":
            return int(self._fn(*[a.ctypes.data for a in [*sources, *targets]]))
        inputs, outputs = self.io_pointers
        for address, array in zip(inputs, sources, strict=True):
            ctypes.memmove(address, array.ctypes.data, array.nbytes)
        status = int(self._invoke())
        for address, array in zip(outputs, targets, strict=True):
            ctypes.memmove(array.ctypes.data, address, array.nbytes)
        return status

    __call__ = run
