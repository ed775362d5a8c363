"""Plotly figure specs (plain JSON) for the comparison page: accuracy against size,
latency and RAM with the Pareto front marked, and per-metric bars."""

from __future__ import annotations

from typing import Any

from tinymlaas.service.services import ComparisonRow

__all__ = ["BAR_METRICS", "bar_figures", "pareto_front", "scatter_figures"]

#: (key, axis title, scale) of the trade-off plots; x is minimised, accuracy maximised.
SCATTERS = [
    ("file_bytes", "size", "Model size (KiB)", 1 / 1024),
    ("latency_ms", "latency", "Latency p50 (ms)", 1.0),
    ("peak_memory_mb", "RAM", "Peak RAM (MiB)", 1.0),
]
#: (key, label) of the metrics offered by the bar chart.
BAR_METRICS = [
    ("accuracy", "Accuracy (%)"),
    ("accuracy_change", "Accuracy change (points)"),
    ("size_ratio", "Size reduction (×)"),
    ("latency_ratio", "Speed-up (×)"),
    ("peak_memory_mb", "Peak RAM (MiB)"),
    ("file_bytes", "Size (bytes)"),
]
_LAYOUT: dict[str, Any] = {"margin": {"l": 56, "r": 16, "t": 40, "b": 48}, "height": 340,
           "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "#ffffff",
           "font": {"family": "system-ui, sans-serif", "size": 12},
           "legend": {"orientation": "h", "y": -0.25}}


def _layout(**extra: Any) -> dict[str, Any]:
    return {**_LAYOUT, **extra}


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


def _label(row: ComparisonRow) -> str:
    return f"{row.name} ({row.run_id[-6:]})"


def scatter_figures(rows: list[ComparisonRow],
                    baseline: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One figure per trade-off; ``baseline`` (input-model metrics) adds a reference point."""
    figures = []
    for key, short, title, scale in SCATTERS:
        usable = [r for r in rows if r.accuracy is not None and getattr(r, key) is not None]
        xs = [float(getattr(r, key)) * scale for r in usable]
        ys = [float(r.accuracy) for r in usable]  # type: ignore[arg-type]
        front = pareto_front(list(zip(xs, ys, strict=True)))
        traces: list[dict[str, Any]] = [{
            "type": "scatter", "mode": "markers+text", "name": "runs", "x": xs, "y": ys,
            "text": [r.name for r in usable], "textposition": "top center",
            "cliponaxis": False,
            "hovertext": [_label(r) for r in usable], "hoverinfo": "text+x+y",
            "marker": {"size": 11, "color": "#2563eb"}}]
        if front:
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": "Pareto front",
                "x": [xs[i] for i in front], "y": [ys[i] for i in front],
                "line": {"color": "#f97316", "dash": "dot", "width": 2},
                "marker": {"size": 15, "symbol": "circle-open", "color": "#f97316",
                           "line": {"width": 2}}, "hoverinfo": "skip"})
        base_key = {"latency_ms": "latency_ms_p50"}.get(key, key)
        if baseline and baseline.get(base_key) is not None and baseline.get("accuracy"):
            traces.append({
                "type": "scatter", "mode": "markers", "name": "input model",
                "x": [float(baseline[base_key]) * scale], "y": [float(baseline["accuracy"])],
                "marker": {"size": 12, "symbol": "diamond", "color": "#64748b"}})
        figures.append({"id": f"plot-{key.replace('_', '-')}", "data": traces,
                        "layout": _layout(title={"text": f"Accuracy vs {short}"},
                                          xaxis={"title": {"text": title}, "zeroline": False},
                                          yaxis={"title": {"text": "Accuracy (%)"}})})
    return figures


def bar_figures(rows: list[ComparisonRow]) -> dict[str, dict[str, Any]]:
    """A bar chart per metric, keyed by metric (the page switches between them)."""
    figures = {}
    for key, label in BAR_METRICS:
        values = [getattr(r, key) for r in rows]
        figures[key] = {"data": [{
            "type": "bar", "x": [_label(r) for r in rows],
            "y": [None if v is None else float(v) for v in values],
            "marker": {"color": "#2563eb"}, "name": label}],
            "layout": _layout(title={"text": label}, yaxis={"title": {"text": label}},
                              showlegend=False)}
    return figures
