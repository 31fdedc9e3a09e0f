"""The migration page's burn-down: Connect-only tenants per day, as server-side SVG,
on an axis that runs to Connect's end of support, with the pace that would reach zero
by then (a straight line from today's figure). Labels go through ``svg._text``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from markupsafe import Markup

from app.http.console.svg import PALETTE, PLOT_HEIGHT, PLOT_LEFT, PLOT_TOP, WIDTH, _figure, _text

BOTTOM = PLOT_TOP + PLOT_HEIGHT
RIGHT = WIDTH - 16


def burn_down_chart(days: Sequence[tuple[date, int]], deadline: date, today: date) -> Markup:
    """One bar per day (Connect-only tenants at its end), a dashed line at ``deadline``,
    and a dotted "pace needed" line from the last day's figure to zero at the deadline."""
    first = days[0][0] if days else today
    last = max(deadline, days[-1][0] if days else today)
    span = max((last - first).days + 1, 1)
    slot = (RIGHT - PLOT_LEFT) / span
    top = float(max(max((n for _, n in days), default=0), 4))
    top = float(-(-top // 4) * 4)  # four whole steps

    def x_of(day: date) -> float:
        return PLOT_LEFT + (day - first).days * slot

    def y_of(value: float) -> float:
        return BOTTOM - value / top * PLOT_HEIGHT

    title = f"Connect-only tenants per day, towards {deadline.isoformat()}"
    height = BOTTOM + 52
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart burn-down" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'aria-label="{_text(title)}"><title>{_text(title)}</title>'
    ]
    for step in range(5):
        y = y_of(top * step / 4)
        parts.append(
            f'<line class="grid" x1="{PLOT_LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}"/>'
            f'<text x="{PLOT_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_text(_figure(top * step / 4))}</text>"
        )
    parts.append(f'<line class="axis" x1="{PLOT_LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}"/>')
    width = max(min(slot * 0.8, 24), 1)
    for day, count in days:
        y = y_of(count)
        parts.append(
            f'<rect class="bar" data-column="{day.isoformat()}" data-value="{count}" '
            f'x="{x_of(day) + (slot - width) / 2:.1f}" y="{y:.1f}" width="{width:.1f}" '
            f'height="{max(BOTTOM - y, 0):.1f}" fill="{PALETTE[0]}">'
            f"<title>{day.isoformat()}: {count} Connect-only</title></rect>"
        )
    if days:
        end_day, end_count = days[-1]
        parts.append(
            f'<line class="pace" x1="{x_of(end_day) + slot / 2:.1f}" y1="{y_of(end_count):.1f}" '
            f'x2="{x_of(deadline) + slot / 2:.1f}" y2="{BOTTOM}" stroke="{PALETTE[5]}" '
            f'stroke-width="2" stroke-dasharray="2 3"><title>pace needed to reach 0 by '
            f"{deadline.isoformat()}</title></line>"
        )
    dx = x_of(deadline) + slot / 2
    parts.append(
        f'<line class="deadline" x1="{dx:.1f}" y1="{PLOT_TOP}" x2="{dx:.1f}" y2="{BOTTOM}" '
        f'stroke="#b42318" stroke-width="2" stroke-dasharray="6 4"/>'
        f'<text x="{dx - 4:.1f}" y="{PLOT_TOP + 12}" text-anchor="end" fill="#b42318">'
        f"Connect end of support {deadline.isoformat()}</text>"
    )
    ticks = _ticks(first, last)
    for day in ticks:
        anchor = "end" if day == ticks[-1] else "start" if day == ticks[0] else "middle"
        x = RIGHT if anchor == "end" else PLOT_LEFT if anchor == "start" else x_of(day) + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{BOTTOM + 16}" text-anchor="{anchor}">{day.isoformat()}</text>'
        )
    parts.append(
        f'<g class="legend"><rect x="{PLOT_LEFT}" y="{BOTTOM + 30}" width="12" height="12" '
        f'fill="{PALETTE[0]}"/><text x="{PLOT_LEFT + 18}" y="{BOTTOM + 41}">Connect-only tenants '
        f'at the end of the day</text><line x1="{PLOT_LEFT + 260}" y1="{BOTTOM + 36}" '
        f'x2="{PLOT_LEFT + 290}" y2="{BOTTOM + 36}" stroke="{PALETTE[5]}" stroke-width="2" '
        f'stroke-dasharray="2 3"/><text x="{PLOT_LEFT + 296}" y="{BOTTOM + 41}">pace needed '
        f"to reach 0 by then</text></g>"
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every label went through _text or is a date


def _ticks(first: date, last: date) -> list[date]:
    """About six evenly spaced date labels, the last one the end of the axis."""
    span = (last - first).days
    step = max(span // 5, 1)
    ticks = [first.fromordinal(first.toordinal() + i) for i in range(0, span - step // 2, step)]
    return [*ticks, last]
