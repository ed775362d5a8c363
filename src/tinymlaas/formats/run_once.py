"""``python -m tinymlaas.formats.run_once MODEL.onnx INPUTS.npz MEMORY_MB CPU_S [OUT.npz]``:
run an ONNX model once on the arrays of ``INPUTS.npz`` (one per input name), in a process of
its own that first limits its address space to ``MEMORY_MB`` and its CPU time to ``CPU_S``
(see :func:`tinymlaas.formats.examples.run_onnx_isolated`), and keep its outputs in
``OUT.npz`` (``output/<i>``) when given. Exit code 0 when it ran; otherwise 1 with the
reason on the last line of stderr, or killed at its CPU limit."""

from __future__ import annotations

import resource
import sys


def limit(memory_mb: int, cpu_s: int) -> None:
    """Limits that this process cannot raise again (soft and hard), and no core files."""
    for which, value in ((resource.RLIMIT_AS, memory_mb * 2**20),
                         (resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_CORE, 0)):
        _soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def main(model: str, inputs: str, memory_mb: str, cpu_s: str, out: str | None = None) -> int:
    limit(int(memory_mb), int(cpu_s))
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        with np.load(inputs, allow_pickle=False) as arrays:
            feed = {name: arrays[name] for name in arrays.files}
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        outputs = session.run(None, feed)
        if out:
            np.savez(out, **{f"output/{i}": np.asarray(a) for i, a in enumerate(outputs)})
    except Exception as exc:  # the model's fault: reported to the user in one line
        text = str(exc).strip()
        print(text.splitlines()[0] if text else type(exc).__name__, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
