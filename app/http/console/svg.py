"""Server-side SVG charts for the console: stacked columns with a legend.

Written here rather than taken from a charting library because a chart here is a few
``<rect>`` and ``<text>`` elements: about a hundred lines of string building, no
dependency to install or keep up to date, nothing fetched by the browser (the
console works offline), and every label escaped in one place (``_text``).

Every bar is a ``<rect class="bar" data-series=… data-column=…>`` with a ``<title>``
(the browser's tooltip), so people can read exact figures and tests can find bars.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Column", "stacked_columns"]

# Colour-blind-safe palette (Okabe-Ito); series beyond it reuse colours in order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000")

WIDTH = 760
PLOT_TOP = 16
PLOT_LEFT = 48
PLOT_HEIGHT = 200
LABEL_BAND = 44
LEGEND_ROW = 20


@dataclass(frozen=True, slots=True)
class Column:
    """One column (say, a day): a value per series; ``total`` scales a share chart."""

    label: str
    values: dict[str, float]
    total: float | None = None


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _figure(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def stacked_columns(
    columns: Sequence[Column], series: Sequence[str], *, title: str, share: bool = False
) -> Markup:
    """Columns left to right, each a stack of one bar per series with a value above 0.

    ``share``: heights are fractions of each column's ``total`` (or of its sum) and
    the axis reads 0 to 100 %; otherwise the axis runs from 0 to the tallest column.
    """
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    tallest = max((sum(c.values.values()) for c in columns), default=0.0)
    # Counts: an axis top that splits into four whole steps (1, 2, 3, 4 rather than 0.2 …).
    top = 1.0 if share else float(math.ceil(max(tallest, 1) / 4) * 4)
    slot = (WIDTH - PLOT_LEFT - 8) / max(len(columns), 1)
    bar_width = max(min(slot * 0.7, 48), 2)
    legend_rows = (len(series) + 3) // 4
    height = PLOT_TOP + PLOT_HEIGHT + LABEL_BAND + legend_rows * LEGEND_ROW
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'aria-label="{_text(title)}"><title>{_text(title)}</title>'
    ]
    parts += _axis(top, share)
    label_every = max(1, len(columns) // 12)  # keep day labels from overlapping
    for index, column in enumerate(columns):
        x = PLOT_LEFT + index * slot + (slot - bar_width) / 2
        parts += _stack(column, series, colours, x, bar_width, top, share)
        if index % label_every == 0 or index == len(columns) - 1:
            parts.append(
                f'<text class="tick" x="{x + bar_width / 2:.1f}" '
                f'y="{PLOT_TOP + PLOT_HEIGHT + 16}" text-anchor="middle">{_text(column.label)}</text>'
            )
    parts += _legend(series, colours, PLOT_TOP + PLOT_HEIGHT + LABEL_BAND - 8)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated label went through _text


def _axis(top: float, share: bool) -> list[str]:
    bottom = PLOT_TOP + PLOT_HEIGHT
    parts = [f'<line class="axis" x1="{PLOT_LEFT}" y1="{bottom}" x2="{WIDTH - 4}" y2="{bottom}"/>']
    for step in range(5):
        fraction = step / 4
        y = bottom - fraction * PLOT_HEIGHT
        label = f"{int(fraction * 100)} %" if share else _figure(top * fraction)
        parts.append(
            f'<line class="grid" x1="{PLOT_LEFT}" y1="{y:.1f}" x2="{WIDTH - 4}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{PLOT_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{_text(label)}</text>'
        )
    return parts


def _stack(
    column: Column,
    series: Sequence[str],
    colours: dict[str, str],
    x: float,
    bar_width: float,
    top: float,
    share: bool,
) -> list[str]:
    total = column.total if column.total else sum(column.values.values())
    y = float(PLOT_TOP + PLOT_HEIGHT)
    parts: list[str] = []
    for name in series:
        value = column.values.get(name, 0)
        if value <= 0:
            continue
        fraction = value / total if share and total else value / top
        height = fraction * PLOT_HEIGHT
        y -= height
        tip = f"{column.label} · {name}: {_figure(value)}"
        if share and total:
            tip += f" of {_figure(total)} ({fraction:.0%})"
        parts.append(
            f'<rect class="bar" data-series="{_text(name)}" data-column="{_text(column.label)}" '
            f'x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" height="{max(height, 1):.1f}" '
            f'fill="{colours[name]}"><title>{_text(tip)}</title></rect>'
        )
    return parts


def _legend(series: Sequence[str], colours: dict[str, str], y0: float) -> list[str]:
    parts: list[str] = []
    for index, name in enumerate(series):
        x = PLOT_LEFT + (index % 4) * 170
        y = y0 + (index // 4) * LEGEND_ROW
        parts.append(
            f'<g class="legend" data-series="{_text(name)}">'
            f'<rect x="{x}" y="{y}" width="12" height="12" fill="{colours[name]}"/>'
            f'<text x="{x + 18}" y="{y + 11}">{_text(name)}</text></g>'
        )
    return parts
