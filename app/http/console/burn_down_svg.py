"""The migration page's burn-down: Connect-only tenants per day, as server-side SVG,
on an axis that runs to Connect's end of support, with the pace that would reach zero
by then (a straight line from today's figure). Labels go through ``svg._text``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup

from app.http.console.svg import PALETTE, PLOT_HEIGHT, PLOT_LEFT, PLOT_TOP, WIDTH, _figure, _text

BOTTOM = PLOT_TOP + PLOT_HEIGHT
RIGHT = WIDTH - 16
BAR, PACE, DEADLINE = PALETTE[0], PALETTE[5], "#b42318"


@dataclass(frozen=True, slots=True)
class _Axes:
    first: date
    slot: float  # width of one day
    top: float  # the value at the top of the plot

    def x(self, day: date) -> float:
        return PLOT_LEFT + (day - self.first).days * self.slot

    def y(self, value: float) -> float:
        return BOTTOM - value / self.top * PLOT_HEIGHT


def burn_down_chart(days: Sequence[tuple[date, int]], deadline: date, today: date) -> Markup:
    """One bar per day (Connect-only tenants at its end), a dashed line at ``deadline``,
    and a dotted "pace needed" line from the last day's figure to zero at the deadline."""
    first = days[0][0] if days else today
    last = max(deadline, days[-1][0] if days else today)
    highest = max(max((n for _, n in days), default=0), 4)
    axes = _Axes(first, (RIGHT - PLOT_LEFT) / ((last - first).days + 1), -(-highest // 4) * 4)
    title = f"Connect-only tenants per day, towards {deadline.isoformat()}"
    height = BOTTOM + 52
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart burn-down" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'aria-label="{_text(title)}"><title>{_text(title)}</title>',
        *_grid(axes),
        *_bars(axes, days),
        *_deadline(axes, days, deadline),
        *_ticks(axes, first, last),
        _legend(),
        "</svg>",
    ]
    return Markup("".join(parts))  # noqa: S704 - every label went through _text or is a date


def _grid(axes: _Axes) -> list[str]:
    parts = []
    for step in range(5):
        value = axes.top * step / 4
        y = axes.y(value)
        parts.append(
            f'<line class="grid" x1="{PLOT_LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}"/>'
            f'<text x="{PLOT_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_text(_figure(value))}</text>"
        )
    parts.append(f'<line class="axis" x1="{PLOT_LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}"/>')
    return parts


def _bars(axes: _Axes, days: Sequence[tuple[date, int]]) -> list[str]:
    width = max(min(axes.slot * 0.8, 24), 1)
    parts = []
    for day, count in days:
        y = axes.y(count)
        parts.append(
            f'<rect class="bar" data-column="{day.isoformat()}" data-value="{count}" '
            f'x="{axes.x(day) + (axes.slot - width) / 2:.1f}" y="{y:.1f}" width="{width:.1f}" '
            f'height="{max(BOTTOM - y, 0):.1f}" fill="{BAR}">'
            f"<title>{day.isoformat()}: {count} Connect-only</title></rect>"
        )
    return parts


def _deadline(axes: _Axes, days: Sequence[tuple[date, int]], deadline: date) -> list[str]:
    x = axes.x(deadline) + axes.slot / 2
    parts = []
    if days:
        end_day, end_count = days[-1]
        parts.append(
            f'<line class="pace" x1="{axes.x(end_day) + axes.slot / 2:.1f}" '
            f'y1="{axes.y(end_count):.1f}" x2="{x:.1f}" y2="{BOTTOM}" stroke="{PACE}" '
            f'stroke-width="2" stroke-dasharray="2 3"><title>pace needed to reach 0 by '
            f"{deadline.isoformat()}</title></line>"
        )
    parts.append(
        f'<line class="deadline" x1="{x:.1f}" y1="{PLOT_TOP}" x2="{x:.1f}" y2="{BOTTOM}" '
        f'stroke="{DEADLINE}" stroke-width="2" stroke-dasharray="6 4"/>'
        f'<text x="{x - 4:.1f}" y="{PLOT_TOP + 12}" text-anchor="end" fill="{DEADLINE}">'
        f"Connect end of support {deadline.isoformat()}</text>"
    )
    return parts


def _ticks(axes: _Axes, first: date, last: date) -> list[str]:
    """About six date labels, evenly spaced; the first and the last at the plot's ends."""
    span = (last - first).days
    step = max(span // 5, 1)
    days = [date.fromordinal(first.toordinal() + i) for i in range(0, span - step // 2, step)]
    days.append(last)
    parts = []
    for day in days:
        anchor = "end" if day == last else "start" if day == first else "middle"
        x = RIGHT if anchor == "end" else PLOT_LEFT if anchor == "start" else axes.x(day)
        parts.append(
            f'<text x="{x:.1f}" y="{BOTTOM + 16}" text-anchor="{anchor}">{day.isoformat()}</text>'
        )
    return parts


def _legend() -> str:
    y = BOTTOM + 30
    return (
        f'<g class="legend"><rect x="{PLOT_LEFT}" y="{y}" width="12" height="12" fill="{BAR}"/>'
        f'<text x="{PLOT_LEFT + 18}" y="{y + 11}">Connect-only tenants at the end of the day'
        f'</text><line x1="{PLOT_LEFT + 260}" y1="{y + 6}" x2="{PLOT_LEFT + 290}" y2="{y + 6}" '
        f'stroke="{PACE}" stroke-width="2" stroke-dasharray="2 3"/><text x="{PLOT_LEFT + 296}" '
        f'y="{y + 11}">pace needed to reach 0 by then</text></g>'
    )
