"""The run e-mail reads like the other views: sizes in binary units, never raw byte counts
or "MB"."""

from __future__ import annotations

from tinymlaas.domain import Pipeline, Run, RunStatus
from tinymlaas.notify.notifier import Notifier


def test_the_result_lines_use_binary_units() -> None:
    run = Run(id="run-1", name="q", model_id="m", pipeline=Pipeline(name="q", steps=["fuse"]),
              status=RunStatus.succeeded,
              baseline={"accuracy": 98.8889, "file_bytes": 1572864, "latency_ms_p50": 0.41,
                        "peak_memory_mb": 80.0},
              result={"accuracy": 98.6111, "file_bytes": 393216, "latency_ms_p50": 0.2,
                      "peak_memory_mb": 40.5})
    subject, body = Notifier._email(run)
    assert subject == "[tinymlaas] run q succeeded"
    lines = body.splitlines()
    assert "  accuracy: 98.89% -> 98.61%" in lines
    assert "  size: 1.5 MiB -> 384 KiB" in lines
    assert "  latency p50: 0.410 ms -> 0.200 ms" in lines
    assert "  peak memory: 80 MiB -> 40.5 MiB" in lines
    assert "MB" not in body and "bytes" not in body
