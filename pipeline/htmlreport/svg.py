"""Static inline SVG charts: a line chart and horizontal bars, as strings.

Drawn in Python so the report needs no chart library and no script to show a chart; every
label is escaped (a teacher's or reason's name is user text)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
PAD_L, PAD_R, PAD_T, PAD_B = 56, 16, 24, 40  # room for tick labels and axis titles


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round values spanning [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def line_chart(
    series: list[Series],
    *,
    x_label: str,
    y_label: str,
    mark_x: float | None = None,
    width: int = 560,
    height: int = 260,
) -> str:
    """Lines (with dots) of every series on shared axes; `mark_x` draws a dashed vertical line
    (the selected step)."""
    pts = [p for s in series for p in s.points]
    if not pts:
        return '<p class="muted">nothing to plot</p>'
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or abs(y1) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    w, h = width - PAD_L - PAD_R, height - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return PAD_T + (1 - (y - y0) / (y1 - y0)) * h

    out = [_open(width, height, y_label)]
    out += _axes((x0, x1, y0, y1), sx, sy, (width, height), x_label, y_label)
    if mark_x is not None and x0 <= mark_x <= x1:
        out.append(
            f'<line x1="{sx(mark_x):.1f}" y1="{PAD_T}" x2="{sx(mark_x):.1f}" '
            f'y2="{PAD_T + h}" stroke="#888" stroke-dasharray="4 3"/>'
        )
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        out += [
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}">'
            f"<title>{escape(s.name)}: {_fmt(x)}, {_fmt(y)}</title></circle>"
            for x, y in s.points
        ]
        out.append(
            f'<text x="{PAD_L + 8 + 120 * i}" y="{PAD_T - 8}" fill="{color}">{escape(s.name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" font-size="11" '
        f'font-family="sans-serif"><title>{escape(title)}</title>'
    )


def _axes(
    box: tuple[float, float, float, float],
    sx: Callable[[float], float],
    sy: Callable[[float], float],
    size: tuple[int, int],
    x_label: str,
    y_label: str,
) -> list[str]:
    """The frame, the ticks with their labels and grid lines, and both axis titles."""
    x0, x1, y0, y1 = box
    width, height = size
    bottom, right = height - PAD_B, width - PAD_R
    out = [
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{right - PAD_L}" height="{bottom - PAD_T}" '
        'fill="none" stroke="#ccc"/>'
    ]
    for t in ticks(x0, x1):
        out.append(f'<text x="{sx(t):.1f}" y="{bottom + 14}" text-anchor="middle">{_fmt(t)}</text>')
    for t in ticks(y0, y1):
        y = sy(t)
        out.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(
        f'<text x="{(PAD_L + right) / 2}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    out.append(
        f'<text transform="translate(12 {(PAD_T + bottom) / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    return out


def bars(items: list[tuple[str, int]], total: int, *, width: int = 560) -> str:
    """Horizontal bars, one per (label, count), each labelled with its count and its share of
    `total`."""
    if not items:
        return '<p class="muted">nothing to plot</p>'
    row, label_w = 22, 170
    height = row * len(items) + 8
    top = max(total, max(c for _, c in items), 1)
    scale = (width - label_w - 110) / top
    out = [_open(width, height, "counts")]
    for i, (label, count) in enumerate(items):
        y = 4 + i * row
        bw = max(count * scale, 1 if count else 0)
        share = f"{100 * count / total:.1f}%" if total else "-"
        out.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{bw:.1f}" height="{row - 8}" '
            f'fill="{COLORS[0] if label == "kept" else COLORS[1]}"/>'
            f'<text x="{label_w + bw + 6:.1f}" y="{y + 14}">{count:,} ({share})</text>'
        )
    out.append("</svg>")
    return "".join(out)
