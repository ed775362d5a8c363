"""Plotly figure specs (plain JSON) for the comparison page.

What the plots never do: put host figures and device figures on one axis (host latency and
process RAM have their plots, the device's arena + I/O against its RAM limit has its own),
or runs of different runtimes on one speed or host-memory axis without telling them apart
(each runtime has its own marker, legend group and Pareto front). Accuracy axes are fitted
to the data, never from 0, so runs a tenth of a point apart stay apart. No permanent text
labels sit on the points (they collide as soon as points are close): each run is a legend
entry with its own colour, and hovering a point names it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tinymlaas.domain.units import human_bytes, human_mib
from tinymlaas.service.compare import RUNTIME_NAMES, ComparisonRow

__all__ = ["BAR_METRICS", "accuracy_range", "bar_figures", "layers_figure", "pareto_front",
           "scatter_figures"]

KIB = 1024
#: (key, label) of the metrics offered by the bar chart.
BAR_METRICS = [
    ("accuracy", "Accuracy (%)"),
    ("accuracy_change", "Accuracy change (points)"),
    ("quality", "Task metric"),
    ("size_ratio", "Size reduction (×)"),
    ("latency_ratio", "Host speed-up, same runtime (×)"),
    ("peak_memory_mb", "Host peak RAM (MiB)"),
    ("file_bytes", "Size (KiB)"),
    ("device_ram", "Device RAM: arena + I/O (KiB)"),
]
PALETTE = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04",
           "#db2777", "#4b5563", "#65a30d"]
SYMBOLS = {"onnxruntime": "circle", "c": "square", "torch": "diamond"}
_LAYOUT: dict[str, Any] = {
    "margin": {"l": 64, "r": 16, "t": 40, "b": 8, "pad": 2}, "height": 380,
    "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "#ffffff",
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "hovermode": "closest",
    # Below the x axis title, in the space plotly reserves for it (automargin).
    "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.22, "yanchor": "top",
               "font": {"size": 11}, "tracegroupgap": 4},
}


def _layout(entries: int, **extra: Any) -> dict[str, Any]:
    """The common layout, taller by one legend line per three entries."""
    return {**_LAYOUT, "height": _LAYOUT["height"] + 22 * ((entries + 2) // 3), **extra}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower or equal x with higher or equal
    y, better in one of them. Sorted by x."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(ox <= x and oy >= y and (ox < x or oy > y)
                        for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def accuracy_range(values: list[float]) -> list[float] | None:
    """An accuracy axis fitted to ``values`` with padding (at least half a point each
    side), never from 0; None without values."""
    if not values:
        return None
    low, high = min(values), max(values)
    pad = max((high - low) * 0.15, 0.5)
    return [round(low - pad, 3), round(high + pad, 3)]


def _label(row: ComparisonRow) -> str:
    return f"{row.name} ({row.run_id[-6:]})"


def _runtime(runtime: str | None) -> str:
    return RUNTIME_NAMES.get(runtime or "", runtime or "unknown runtime")


def _device_ram(row: ComparisonRow) -> int | None:
    device = row.device
    if device is None:
        return None
    if device.arena_bytes is not None and device.io_bytes is not None:
        return device.arena_bytes + device.io_bytes
    return device.ram_needed_bytes


#: (id, title, x axis title, x of a row, x of a row's baseline, text of an x, grouped by
#: runtime): the trade-off plots. x is minimised, accuracy maximised.
Scatter = tuple[str, str, str, Callable[[ComparisonRow], float | None],
                Callable[[ComparisonRow], float | None] | None, Callable[[float], str], bool]
SCATTERS: list[Scatter] = [
    ("plot-file-bytes", "Accuracy vs model size", "Model size (KiB)",
     lambda r: r.file_bytes, lambda r: r.baseline.file_bytes,
     lambda v: human_bytes(v), False),
    ("plot-latency-ms", "Accuracy vs host latency (per runtime)", "Host latency p50 (ms)",
     lambda r: r.host.latency_ms, lambda r: r.baseline.latency_ms,
     lambda v: f"{v:.3f} ms", True),
    ("plot-peak-memory-mb", "Accuracy vs host process RAM (per runtime)",
     "Host peak RAM of the process (MiB)",
     lambda r: r.host.peak_memory_mb, lambda r: r.baseline.peak_memory_mb,
     lambda v: human_mib(v), True),
    ("plot-device-ram", "Accuracy vs device RAM (arena + I/O)", "Device RAM needed (KiB)",
     _device_ram, None, lambda v: human_bytes(v), False),
]
_SCALES = {"plot-file-bytes": 1 / KIB, "plot-device-ram": 1 / KIB}


def scatter_figures(rows: list[ComparisonRow]) -> list[dict[str, Any]]:
    """One figure per trade-off. Each run is its own trace (colour by run, marker by
    runtime); the Pareto front is drawn per runtime where runtimes must not mix."""
    colours = {r.run_id: PALETTE[i % len(PALETTE)] for i, r in enumerate(rows)}
    figures = []
    for fig_id, title, x_title, x_of, base_of, text_of, by_runtime in SCATTERS:
        scale = _SCALES.get(fig_id, 1.0)
        usable = [r for r in rows if r.accuracy is not None and x_of(r) is not None]
        traces: list[dict[str, Any]] = []
        for row in usable:
            raw = float(x_of(row))  # type: ignore[arg-type]
            estimate = fig_id == "plot-device-ram" and row.device is not None and \
                row.device.verdict == "unsupported ops"
            traces.append({
                "type": "scatter", "mode": "markers",
                "name": f"{row.name} · {_runtime(row.host.runtime)}"
                        + (" (estimate: unsupported ops)" if estimate else ""),
                "legendgroup": row.run_id, "x": [raw * scale], "y": [row.accuracy],
                "hovertext": [f"{_label(row)}<br>{_runtime(row.host.runtime)}<br>"
                              f"{text_of(raw)}, {row.accuracy:.2f}%"],
                "hoverinfo": "text",
                "marker": {"size": 12, "color": colours[row.run_id],
                           "symbol": "x" if estimate else SYMBOLS.get(row.host.runtime or "",
                                                                       "triangle-up"),
                           "line": {"width": 1, "color": "#ffffff"}},
                "meta": {"run_id": row.run_id, "runtime": row.host.runtime}})
        groups: dict[str | None, list[ComparisonRow]] = {}
        for row in usable:
            if fig_id == "plot-device-ram" and row.device and \
                    row.device.verdict == "unsupported ops":
                continue  # an estimate the runtime cannot run: not on the front
            groups.setdefault(row.host.runtime if by_runtime else None, []).append(row)
        for runtime, members in groups.items():
            points = [(float(x_of(r)) * scale, float(r.accuracy))  # type: ignore[arg-type]
                      for r in members]
            front = pareto_front(points)
            name = "Pareto front" + (f" · {_runtime(runtime)}" if by_runtime else "")
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": name,
                "x": [points[i][0] for i in front], "y": [points[i][1] for i in front],
                "line": {"color": "#64748b", "dash": "dot", "width": 1.5},
                "marker": {"size": 18, "symbol": "circle-open", "color": "#64748b"},
                "hoverinfo": "skip"})
        traces += _baseline_traces(usable, base_of, scale, text_of)
        shapes, annotations = _device_limits(usable) if fig_id == "plot-device-ram" \
            else ([], [])
        accuracies = [float(r.accuracy) for r in usable]  # type: ignore[arg-type]
        accuracies += [y for t in traces if t.get("meta") == "baseline" for y in t["y"]]
        xaxis: dict[str, Any] = {"title": {"text": x_title}, "zeroline": False,
                                 "automargin": True, "rangemode": "tozero"}
        if shapes:
            # an arena of a few KiB next to a limit of hundreds: a log axis shows both
            # (on a log axis shapes take data values, annotations log10 of them)
            xs = [float(x_of(r)) * scale for r in usable]  # type: ignore[arg-type]
            xs += [s["x0"] for s in shapes]
            xaxis.update(type="log", rangemode="normal",
                         range=[math.log10(max(min(xs), 1e-3) / 2), math.log10(max(xs) * 1.5)])
        figures.append({"id": fig_id, "data": traces, "layout": _layout(
            len(traces), title={"text": title},
            xaxis=xaxis,
            yaxis={"title": {"text": "Accuracy (%)"}, "range": accuracy_range(accuracies),
                   "automargin": True},
            shapes=shapes, annotations=annotations)})
    return figures


def _baseline_traces(rows: list[ComparisonRow],
                     base_of: Callable[[ComparisonRow], float | None] | None, scale: float,
                     text_of: Callable[[float], str]) -> list[dict[str, Any]]:
    """The baselines of the rows (one point per runtime), when the plot has them."""
    if base_of is None:
        return []
    seen: dict[str | None, tuple[float, float]] = {}
    for row in rows:
        x, y = base_of(row), row.baseline.accuracy
        if x is not None and y is not None and row.baseline.runtime not in seen:
            seen[row.baseline.runtime] = (float(x), float(y))
    return [{"type": "scatter", "mode": "markers", "meta": "baseline",
             "name": f"float32 baseline · {_runtime(runtime)}",
             "x": [x * scale], "y": [y], "hoverinfo": "text",
             "hovertext": [f"float32 baseline<br>{_runtime(runtime)}<br>{text_of(x)}, "
                           f"{y:.2f}%"],
             "marker": {"size": 13, "color": "#64748b",
                        "symbol": SYMBOLS.get(runtime or "", "triangle-up") + "-open",
                        "line": {"width": 2}}}
            for runtime, (x, y) in seen.items()]


def _device_limits(rows: list[ComparisonRow]) -> tuple[list[dict[str, Any]],
                                                        list[dict[str, Any]]]:
    """A vertical line at each target device's RAM, labelled at the top of the plot (on
    the log axis a shape takes KiB, an annotation log10 of KiB)."""
    limits = {r.device.device: r.device.ram_limit_bytes for r in rows if r.device}
    shapes, annotations = [], []
    for index, (device, limit) in enumerate(sorted(limits.items(), key=lambda kv: kv[1])):
        x = limit / KIB
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x,
                       "y0": 0, "y1": 1, "line": {"color": "#dc2626", "dash": "dash",
                                                  "width": 1.5}})
        annotations.append({"xref": "x", "yref": "paper", "x": math.log10(x),
                            "y": 1 - 0.08 * index,
                            "xanchor": "right", "yanchor": "top", "showarrow": False,
                            "text": f"{device} RAM {human_bytes(limit)}",
                            "font": {"size": 10, "color": "#dc2626"}})
    return shapes, annotations


_BAR_VALUES: dict[str, Callable[[ComparisonRow], float | None]] = {
    "accuracy": lambda r: r.accuracy,
    "accuracy_change": lambda r: r.accuracy_change,
    "quality": lambda r: r.quality.get("value"),
    "size_ratio": lambda r: r.size_ratio,
    "latency_ratio": lambda r: r.host.latency_ratio,
    "peak_memory_mb": lambda r: r.host.peak_memory_mb,
    "file_bytes": lambda r: None if r.file_bytes is None else r.file_bytes / KIB,
    "device_ram": lambda r: None if _device_ram(r) is None else _device_ram(r) / KIB,  # type: ignore[operator]
}


def bar_figures(rows: list[ComparisonRow]) -> dict[str, dict[str, Any]]:
    """A bar chart per metric, keyed by metric (the page switches between them). Each bar
    says its run's runtime; a missing ratio (runtimes differ) is a gap with the reason."""
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(rows))]
    figures = {}
    for key, label in BAR_METRICS:
        values = [_BAR_VALUES[key](r) for r in rows]
        if key == "quality":  # the task's primary metric, named when the runs share it
            names = {(r.quality["label"], r.quality["unit"]) for r in rows if r.quality}
            if len(names) == 1:
                (name, unit), = names
                label = f"{name[:1].upper()}{name[1:]}" + (f" ({unit.strip()})" if unit else "")
        hover = [f"{_label(r)}<br>{_runtime(r.host.runtime)}<br>"
                 + ("–: " + "; ".join(r.notes) if v is None and r.notes else
                    "–" if v is None else f"{v:.4g}")
                 for r, v in zip(rows, values, strict=True)]
        # horizontal bars: run names on the y axis stay level and apart, however many
        value_axis: dict[str, Any] = {"title": {"text": label}, "automargin": True}
        if key == "accuracy":
            value_axis["range"] = accuracy_range([float(v) for v in values if v is not None])
        layout: dict[str, Any] = {
            **_LAYOUT, "height": 140 + 30 * len(rows), "title": {"text": label},
            "xaxis": value_axis, "yaxis": {"automargin": True, "autorange": "reversed"},
            "showlegend": False, "margin": {**_LAYOUT["margin"], "b": 16}}
        figures[key] = {"data": [{
            "type": "bar", "orientation": "h", "y": [_label(r) for r in rows],
            "x": [None if v is None else float(v) for v in values],
            "hovertext": hover, "hoverinfo": "text",
            "marker": {"color": colours}, "name": label}], "layout": layout}
    return figures


def layers_figure(rows: list[Any]) -> dict[str, Any]:
    """The run page's per-layer chart: live arena bytes (KiB, bars, left axis) and MACs
    (markers, right axis) at each compiled kernel call, one point per call."""
    steps = [r.step for r in rows]
    names = [f"#{r.step} {r.op_type}<br>{', '.join(r.nodes)}<br>"
             f"output {'x'.join(map(str, r.output_shape))}<br>live arena "
             f"{human_bytes(r.live_bytes)}, flash {human_bytes(r.flash_bytes)}<br>"
             f"{r.macs:,} MACs" for r in rows]
    return {"id": "plot-layers", "data": [
        {"type": "bar", "name": "Live arena (KiB)", "x": steps,
         "y": [r.live_bytes / KIB for r in rows], "hovertext": names, "hoverinfo": "text",
         "marker": {"color": PALETTE[0]}},
        {"type": "scatter", "mode": "lines+markers", "name": "MACs", "x": steps,
         "y": [r.macs for r in rows], "yaxis": "y2", "hovertext": names,
         "hoverinfo": "text", "marker": {"color": PALETTE[1], "size": 8}},
    ], "layout": _layout(2, title={"text": "Layers: live arena and MACs per kernel call"},
                         xaxis={"title": {"text": "Kernel call (execution order)"},
                                "automargin": True, "dtick": 1 if len(rows) <= 30 else None},
                         yaxis={"title": {"text": "Live arena (KiB)"}, "automargin": True,
                                "rangemode": "tozero"},
                         yaxis2={"title": {"text": "MACs"}, "overlaying": "y",
                                 "side": "right", "rangemode": "tozero",
                                 "automargin": True, "showgrid": False})}
