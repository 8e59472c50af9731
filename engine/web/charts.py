"""Charts as inline SVG drawn on the server: no script, no CDN, so the admin UI works offline under a strict CSP."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

#: Series colours, distinguishable for the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


@dataclass(frozen=True)
class Series:
    """One line of a chart: a name and one value per label (None: no data)."""

    name: str
    values: list[float | None]


def line_chart(labels: list[str], series: list[Series], *, title: str, unit: str = "", width: int = 640,
               height: int = 260) -> Markup:
    """A line chart with axes, a legend and a <title> per point (shown as a tooltip)."""
    rows = max(1, -(-len(series) // 4))  # legend rows, four series each
    left, right, top, bottom = 56, 12, 16, 34 + 14 * rows
    plot_w, plot_h = width - left - right, height - top - bottom
    present = [v for s in series for v in s.values if v is not None]
    top_value = _nice_ceiling(max(present, default=0.0))
    n = max(len(labels), 1)

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + plot_h - (plot_h * v / top_value if top_value else 0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'class="chart" aria-label="{escape(title)}">', f"<title>{escape(title)}</title>"]
    for k in range(5):  # horizontal grid lines with their values
        value = top_value * k / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                     f'stroke="#e4e7eb" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#52606d">{_fmt(value)}{escape(unit)}</text>')
    step = max(1, -(-len(labels) // 12))  # at most about 12 labels on the axis
    for i, label in enumerate(labels):
        if i % step == 0:
            parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11" '
                         f'fill="#52606d">{escape(label)}</text>')
    for s_index, s in enumerate(series):
        colour = PALETTE[s_index % len(PALETTE)]
        points = [(x(i), y(v), v, labels[i]) for i, v in enumerate(s.values) if v is not None and i < len(labels)]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for px, py, v, label in points:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"><title>{escape(s.name)}, '
                         f'{escape(label)}: {_fmt(v)}{escape(unit)}</title></circle>')
        lx = left + 8 + (s_index % 4) * ((plot_w - 8) // 4)
        ly = height - 8 - 14 * (rows - 1 - s_index // 4)
        parts.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="{ly}" font-size="12" fill="#1f2933">{escape(s.name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice_ceiling(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or float(value).is_integer() else f"{value:,.1f}"
