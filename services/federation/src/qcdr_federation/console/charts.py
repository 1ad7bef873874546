"""Inline SVG charts drawn on the server (no JavaScript): geometry only, the template draws it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SEVERITIES = ("critical", "high", "medium", "low", "info")
COLORS = {"critical": "#8b0d1a", "high": "#c6372c", "medium": "#d58512", "low": "#3b7dd8", "info": "#6b7785"}
# categories have no meaning of their own: a palette told apart by hue, grey for "other"
PALETTE = ("#2f6fb0", "#d4772c", "#3d9a5b", "#8a55b5", "#c2a000", "#1f9aa5", "#b5477a")
OTHER = "other"
OTHER_COLOR = "#9aa3ad"


def category_colors(categories: Sequence[str]) -> dict[str, str]:
    """A colour per category (in the given order), ``other`` grey."""
    colors = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(c for c in categories if c != OTHER)}
    colors[OTHER] = OTHER_COLOR
    return colors


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    max_value: int
    first_label: str
    last_label: str
    baseline: float


def stacked_bars(
    series: Sequence[Mapping[str, object]],
    *,
    field: str = "counts",
    colors: Mapping[str, str] = COLORS,
    width: int = 720,
    height: int = 180,
) -> Chart | None:
    """Stacked bars, one per bucket, one segment per key of ``colors`` in its order (the first at
    the bottom): severities by default, categories with ``field="categories"``.

    ``series`` items are ``{"start": iso, field: {key: int}}``; None when there is none.
    """
    if not series:
        return None
    top, bottom, left = 10.0, 20.0, 4.0
    plot_h = height - top - bottom
    totals: list[int] = []
    for bucket in series:
        counts = bucket.get(field)
        totals.append(sum(int(counts.get(k, 0) or 0) for k in colors) if isinstance(counts, Mapping) else 0)
    peak = max(max(totals), 1)
    step = (width - 2 * left) / len(series)
    bar_w = max(step * 0.8, 1.0)
    bars: list[Bar] = []
    for i, bucket in enumerate(series):
        counts = bucket.get(field)
        if not isinstance(counts, Mapping):
            continue
        y = top + plot_h
        for key, color in colors.items():
            value = int(counts.get(key, 0) or 0)
            if value <= 0:
                continue
            h = plot_h * value / peak
            y -= h
            bars.append(
                Bar(
                    x=round(left + i * step, 2),
                    y=round(y, 2),
                    width=round(bar_w, 2),
                    height=round(h, 2),
                    color=color,
                    title=f"{str(bucket.get('start', ''))[:16]} {key}: {value}",
                )
            )
    return Chart(
        width=width,
        height=height,
        bars=bars,
        max_value=peak,
        first_label=str(series[0].get("start", ""))[:16].replace("T", " "),
        last_label=str(series[-1].get("start", ""))[:16].replace("T", " "),
        baseline=top + plot_h,
    )
