"""Rendering entities for the terminal: tables, live progress, numbers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from tinymlaas.domain.units import human_bytes, human_kib, human_mib

if TYPE_CHECKING:
    from tinymlaas.engine import RunEvent

__all__ = ["RunProgress", "console", "err_console", "fmt", "human_bytes", "human_kib",
           "human_mib", "print_json", "status", "table"]

console = Console()
err_console = Console(stderr=True)
if not console.is_terminal:
    console.width = max(console.width, 160)  # logs and pipes: don't fold tables

_STATUS_STYLE = {"succeeded": "green", "cached": "cyan", "failed": "red", "degraded": "bold red",
                 "running": "yellow",
                 "skipped": "dim", "cancelled": "magenta", "pending": "dim"}


def print_json(data: Any) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    console.print_json(json.dumps(data, default=str))


def fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{suffix}"


def quality_cells(baseline: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """The task's primary metric and its change against ``baseline``, in its own unit (an
    accuracy in %, a mean cosine, an MAE, an SNR in dB), for run tables."""
    from tinymlaas.domain.quality import quality_summary

    summary = quality_summary(baseline, result)
    if not summary:
        return ["-", "-"]
    value = f"{summary['label']} {summary['text']}" if summary["value"] is not None else "-"
    change = summary["change"]
    digits = 2 if summary["key"] == "accuracy" else 4
    return [value, "-" if change is None else f"{change:+.{digits}f}"]


def status(value: str) -> str:
    return f"[{_STATUS_STYLE.get(value, 'white')}]{value}[/]"


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*[str(cell) for cell in row])
    return out


class RunProgress:
    """Live per-step progress: bars on a terminal, one line per change otherwise."""

    def __init__(self, labels: dict[int | str, str]) -> None:
        self.labels = labels
        self.live = console.is_terminal
        self._last: dict[int | str, str] = {}
        self._started: dict[int | str, float] = {}
        self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(),
                                 TextColumn("{task.fields[state]:<10}"),
                                 TextColumn("{task.fields[message]}"),
                                 TimeElapsedColumn(), console=console)
        self.tasks: dict[int | str, TaskID] = {}

    def __enter__(self) -> RunProgress:
        if self.live:
            self.progress.start()
            for stage, label in self.labels.items():
                self.tasks[stage] = self.progress.add_task(label, total=1.0, state="pending",
                                                           message="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def __call__(self, event: RunEvent) -> None:
        if event.stage == "run":
            return
        if self.live:
            task = self.tasks.get(event.stage)
            if task is not None:
                self.progress.update(task, completed=event.progress, state=event.status,
                                     message=event.message[:60])
            return
        self._started.setdefault(event.stage, time.monotonic())
        if self._last.get(event.stage) != event.status:
            self._last[event.stage] = event.status
            elapsed = time.monotonic() - self._started[event.stage]
            extra = f" ({elapsed:.1f} s)" if event.status not in {"running"} else ""
            detail = f": {event.message}" if event.status == "failed" else ""
            console.print(f"  {self.labels.get(event.stage, event.stage)}: "
                          f"{status(event.status)}{extra}{detail}", highlight=False)
