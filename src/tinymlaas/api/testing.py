"""Helpers for testing against a real server: run the app with uvicorn in a background
thread on a free localhost port, and make a tiny ONNX classifier for the digits dataset.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

__all__ = ["LiveServer", "serve_in_thread", "write_digits_onnx"]


@dataclass
class LiveServer:
    url: str
    host: str
    port: int


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1",
                    startup_timeout_s: float = 30.0) -> Iterator[LiveServer]:
    """Serve ``app`` with uvicorn on ``host`` and a free port until the block ends."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://{host}:{port}", host, port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def write_digits_onnx(path: Path, seed: int = 0) -> Path:
    """A logistic-regression classifier for scikit-learn's digits as ONNX
    (input ``[N, 1, 8, 8]`` float32, output ``[N, 10]`` logits), trained in a second."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    X = (digits.images / 16.0).reshape(len(digits.images), -1)
    clf = LogisticRegression(max_iter=300, random_state=seed).fit(X, digits.target)
    weights = clf.coef_.T.astype(np.float32)  # (64, 10)
    bias = clf.intercept_.astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "b"], ["logits"])],
        "digits_logreg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
