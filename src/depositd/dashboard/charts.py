"""Small charts drawn on the server as inline SVG: no chart library, no script."""

from __future__ import annotations

from markupsafe import Markup, escape

from depositd.services.dashboard import Series

WIDTH, HEIGHT = 360, 120
#: room for the axis labels
LEFT, BOTTOM, TOP = 34, 16, 8


def _nice_top(peak: float) -> float:
    """The smallest of 1, 2, 5 × 10^n at or above the peak (at least 1)."""
    top = 1.0
    while top < peak:
        for step in (2.0, 2.5, 2.0):
            top *= step
            if top >= peak:
                break
    return top


def _format(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def svg_chart(
    series: Series, title: str, *, bars: bool = False, css_class: str = "chart"
) -> Markup:
    """A line (or bar) chart of one value a minute, with its peak and first and last time."""
    values = series.values or [0.0]
    top = _nice_top(max(values))
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(values), 1)

    def y(value: float) -> float:
        return TOP + plot_h - (value / top) * plot_h

    parts = [
        f'<svg class="{escape(css_class)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 4}" y2="{TOP + plot_h}"'
        ' class="axis"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" class="axis"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{_format(top)}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    if bars:
        for i, value in enumerate(values):
            height = (value / top) * plot_h
            parts.append(
                f'<rect x="{LEFT + i * step + 1:.1f}" y="{y(value):.1f}"'
                f' width="{max(step - 2, 1):.1f}" height="{height:.1f}" class="bar">'
                f"<title>{escape(series.labels[i])}: {_format(value)}</title></rect>"
                if i < len(series.labels)
                else ""
            )
    else:
        points = " ".join(
            f"{LEFT + (i + 0.5) * step:.1f},{y(value):.1f}" for i, value in enumerate(values)
        )
        parts.append(f'<polyline points="{points}" class="line"/>')
    if series.labels:
        parts.append(
            f'<text x="{LEFT}" y="{HEIGHT - 3}">{escape(series.labels[0])}</text>'
            f'<text x="{WIDTH - 4}" y="{HEIGHT - 3}" text-anchor="end">'
            f"{escape(series.labels[-1])} UTC</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value interpolated is escaped or a number
