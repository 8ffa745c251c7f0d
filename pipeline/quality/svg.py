"""Small SVG charts for the data-quality report: histograms and stacked bars drawn from counts.

The report's corpus-level figures (one histogram per metric, the summary bars) change with every
added or removed sequence, so they are redrawn on almost every incremental run. Drawn here as SVG
text from their bin counts they cost ≈ 1 ms each instead of ≈ 0.1 s of matplotlib (docs/scaling.md,
"Fifth round"); they embed as ``<img>`` like the PNG plots and need no JavaScript. Pure functions:
numbers in, SVG text out. Sizes are in CSS pixels.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
"""Series colours (matplotlib's default cycle, as the PNG plots use)."""

FONT = "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif"


@dataclass(frozen=True)
class Box:
    """The plotting area inside a figure (pixels from the figure's top left)."""

    left: float
    top: float
    width: float
    height: float

    def x(self, u: float) -> float:
        """Pixel x of the fraction ``u`` in [0, 1] of the axis."""
        return self.left + u * self.width

    def y(self, v: float) -> float:
        """Pixel y of the fraction ``v`` in [0, 1] of the axis (0 at the bottom)."""
        return self.top + (1.0 - v) * self.height


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """At most ``n`` + 1 round tick values (steps of 1, 2, 2.5 or 5 × 10^k) within [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi * (1 + 1e-12) + step * 1e-9:
        ticks.append(_round(first + k * step, step))
        k += 1
    return ticks


def _round(v: float, step: float) -> float:
    digits = max(0, -int(math.floor(math.log10(step))) + 2)
    v = round(v, digits)
    return 0.0 if v == 0 else v


def fmt(v: float) -> str:
    """A tick label: like ``%g`` with at most 4 significant digits."""
    if v == 0:
        return "0"
    return f"{v:.4g}"


def _e(s: str) -> str:
    return html.escape(str(s), quote=True)


def _text(x: float, y: float, s: str, size: float = 10, anchor: str = "middle", colour: str = "#222",
          rotate: float | None = None, baseline: str | None = None) -> str:
    rot = f' transform="rotate({rotate:.0f} {x:.1f} {y:.1f})"' if rotate is not None else ""
    base = f' dominant-baseline="{baseline}"' if baseline else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}" text-anchor="{anchor}" fill="{colour}"'
            f"{base}{rot}>{_e(s)}</text>")


def _axes(box: Box, xticks: Sequence[tuple[float, str]], yticks: Sequence[tuple[float, str]], xlabel: str,
          ylabel: str, ylabel_x: float = 12) -> list[str]:
    """Left and bottom spines, tick marks and labels; tick positions as axis fractions."""
    out = [f'<path d="M{box.left:.1f} {box.top:.1f}V{box.top + box.height:.1f}H{box.left + box.width:.1f}" '
           'stroke="#333" stroke-width="1" fill="none"/>']
    bottom = box.top + box.height
    for u, label in xticks:
        x = box.x(u)
        out.append(f'<path d="M{x:.1f} {bottom:.1f}v4" stroke="#333"/>')
        out.append(_text(x, bottom + 15, label, 9))
    for v, label in yticks:
        y = box.y(v)
        out.append(f'<path d="M{box.left:.1f} {y:.1f}h-4" stroke="#333"/>')
        out.append(_text(box.left - 6, y + 3, label, 9, "end"))
    if xlabel:
        out.append(_text(box.x(0.5), bottom + 30, xlabel, 10))
    if ylabel:
        out.append(_text(ylabel_x, box.y(0.5), ylabel, 10, rotate=-90))
    return out


def _document(width: int, height: int, body: Sequence[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" style="{FONT}"><rect width="100%" height="100%" fill="#fff"/>'
            + "".join(body) + "</svg>")


def histogram(edges: Sequence[float], series: Sequence[tuple[str, Sequence[int]]], xlabel: str,
              ylabel: str = "sequences", lines: Sequence[tuple[float, str, str]] = (), note: Sequence[str] = (),
              width: int = 420, height: int = 240) -> str:
    """A histogram: bars for one series, step lines with a legend for several; ``lines``: vertical
    dashed (value, label, colour) marks (threshold rules); ``note``: lines of text at the top right."""
    box = Box(52, 10, width - 62, height - 58)
    x0, x1 = float(edges[0]), float(edges[-1])
    top = max([1, *(int(c) for _, counts in series for c in counts)])
    yticks = [t for t in nice_ticks(0, top, 4) if t == int(t)]
    ymax = max(top * 1.05, yticks[-1] if yticks else top)  # headroom above the tallest bar

    def u(x: float) -> float:
        return (x - x0) / (x1 - x0) if x1 > x0 else 0.5

    body = []
    if len(series) == 1:
        counts = series[0][1]
        for i, c in enumerate(counts):
            if c:
                xa, xb = box.x(u(edges[i])), box.x(u(edges[i + 1]))
                ya = box.y(c / ymax)
                body.append(f'<rect x="{xa:.1f}" y="{ya:.1f}" width="{max(xb - xa, 0.5):.1f}" '
                            f'height="{box.top + box.height - ya:.1f}" fill="#4c72b0" fill-opacity="0.85"/>')
    else:
        for k, (label, counts) in enumerate(series):
            colour = COLOURS[k % len(COLOURS)]
            d = [f"M{box.x(u(edges[0])):.1f} {box.y(0):.1f}"]
            for i, c in enumerate(counts):
                y = box.y(c / ymax)
                d.append(f"V{y:.1f}H{box.x(u(edges[i + 1])):.1f}")
            d.append(f"V{box.y(0):.1f}")
            body.append(f'<path d="{"".join(d)}" stroke="{colour}" stroke-width="1.4" fill="none"/>')
            ly = box.top + 6 + 12 * k  # legend at the top right
            lx = box.left + box.width - 24 - 5 * len(label)
            body.append(f'<rect x="{lx - 4:.1f}" y="{ly - 5:.1f}" width="{26 + 5 * len(label):.0f}" height="11" '
                        'fill="#fff" fill-opacity="0.8"/>')
            body.append(f'<path d="M{lx:.1f} {ly:.1f}h14" stroke="{colour}" stroke-width="1.4"/>')
            body.append(_text(lx + 18, ly + 3, label, 8, "start"))
    for value, label, colour in lines:
        x = box.x(u(value))
        body.append(f'<path d="M{x:.1f} {box.top:.1f}V{box.top + box.height:.1f}" stroke="{colour}" '
                    'stroke-width="1.2" stroke-dasharray="4 3"/>')
        body.append(_text(x + 3, box.top + 2, label, 8, "end", colour, rotate=-90, baseline="hanging"))
    below = 12 * len(series) + 4 if len(series) > 1 else 0
    for k, line in enumerate(note):
        body.append(_text(box.left + box.width - 2, box.top + 8 + below + 9 * k, line, 7.5, "end", "#555"))
    xticks = [(u(t), fmt(t)) for t in nice_ticks(x0, x1, 5)]
    body += _axes(box, xticks, [(t / ymax, fmt(t)) for t in yticks], xlabel, ylabel)
    return _document(width, height, body)


def stacked_bars(panels: Sequence[tuple[str, str, Sequence[str], Sequence[tuple[str, Sequence[float], str]]]],
                 width: int = 840, height: int = 260) -> str:
    """Panels side by side, each (title, y label, categories, series of (label, values, colour))
    drawn as bars stacked per category, with a legend."""
    n = max(1, len(panels))
    pw = width / n
    body = []
    for p, (title, ylabel, cats, series) in enumerate(panels):
        box = Box(p * pw + 56, 26, pw - 136, height - 58)  # the legend goes right of the axes
        totals = [sum(float(s[1][i]) for s in series) for i in range(len(cats))]
        top = max([0.0, *totals]) or 1.0
        yticks = nice_ticks(0.0, top, 4)
        ymax = max(top * 1.05, yticks[-1] if yticks else top)
        slot = box.width / max(1, len(cats))
        bar = min(slot * 0.8, 90.0)
        bottoms = [0.0] * len(cats)
        for label, values, colour in series:
            for i in range(len(cats)):
                v = float(values[i])
                if v > 0:
                    ya, yb = box.y((bottoms[i] + v) / ymax), box.y(bottoms[i] / ymax)
                    body.append(f'<rect x="{box.left + slot * (i + 0.5) - bar / 2:.1f}" y="{ya:.1f}" '
                                f'width="{bar:.1f}" height="{yb - ya:.1f}" fill="{colour}"/>')
                bottoms[i] += v
        for k, (label, _, colour) in enumerate(series):
            ly = box.top + 4 + 12 * k
            body.append(f'<rect x="{box.left + box.width + 10:.1f}" y="{ly - 4:.1f}" width="10" height="8" '
                        f'fill="{colour}"/>')
            body.append(_text(box.left + box.width + 24, ly + 3, label, 8, "start"))
        body.append(_text(box.x(0.5), 14, title, 11))
        xticks = [((i + 0.5) / max(1, len(cats)), str(c)) for i, c in enumerate(cats)]
        body += _axes(box, xticks, [(t / ymax, fmt(t)) for t in yticks], "", ylabel, ylabel_x=p * pw + 12)
    return _document(width, height, body)


def img(svg: str, alt: str) -> str:
    """The report's ``<img>`` tag of an SVG figure (base64 data URL: self-contained)."""
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/svg+xml;base64,{data}">'
