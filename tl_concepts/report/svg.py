"""Inline SVG plots (no plotting library, no scripts): a histogram and a scatter plot.

Example:
    >>> "<svg" in histogram_svg([0.1, 0.5, 0.9], title="scores")
    True
"""
from __future__ import annotations

import html
from typing import Sequence

W, H, PAD = 420, 260, 36


def _bins(xs: Sequence[float], lo: float, hi: float, n: int) -> list[int]:
    counts = [0] * n
    for x in xs:
        i = int((min(max(x, lo), hi) - lo) / (hi - lo) * n)
        counts[min(i, n - 1)] += 1
    return counts


def histogram_svg(values: Sequence[float], *, title: str, lo: float = -1.0, hi: float = 1.0, n_bins: int = 20,
                  rgb: tuple[int, int, int] = (30, 90, 255), overlay: Sequence[float] = (),
                  overlay_rgb: tuple[int, int, int] = (230, 120, 0), overlay_name: str = "") -> str:
    """A histogram of ``values`` on [lo, hi] (optionally a second series drawn as outlines)."""
    a, b = _bins(values, lo, hi, n_bins), _bins(overlay, lo, hi, n_bins)
    top = max(a + b + [1])
    bw = (W - 2 * PAD) / n_bins
    parts = [f"<svg class=plot xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' role=img "
             f"aria-label='{html.escape(title)}'>",
             f"<text x='{W / 2}' y='16' text-anchor=middle font-size='13'>{html.escape(title)}</text>"]
    for i, (c, d) in enumerate(zip(a, b)):
        x = PAD + i * bw
        h = (H - 2 * PAD) * c / top
        parts.append(f"<rect x='{x:.1f}' y='{H - PAD - h:.1f}' width='{bw - 1:.1f}' height='{h:.1f}' "
                     f"fill='rgb{rgb}'><title>{c}</title></rect>")
        if overlay:
            h2 = (H - 2 * PAD) * d / top
            parts.append(f"<rect x='{x:.1f}' y='{H - PAD - h2:.1f}' width='{bw - 1:.1f}' height='{h2:.1f}' "
                         f"fill='none' stroke='rgb{overlay_rgb}' stroke-width='2'><title>{d}</title></rect>")
    parts.append(f"<line x1='{PAD}' y1='{H - PAD}' x2='{W - PAD}' y2='{H - PAD}' stroke='#444'/>")
    for v in (lo, (lo + hi) / 2, hi):
        x = PAD + (v - lo) / (hi - lo) * (W - 2 * PAD)
        parts.append(f"<text x='{x:.1f}' y='{H - PAD + 16}' text-anchor=middle font-size='11'>{v:g}</text>")
    parts.append(f"<text x='{PAD}' y='{PAD - 6}' font-size='11'>max {top}; n={len(values)}"
                 + (f"; outline: {html.escape(overlay_name)} (n={len(overlay)})" if overlay else "") + "</text>")
    return "".join(parts) + "</svg>"


def scatter_svg(points: Sequence[tuple[float, float]], *, x_name: str, y_name: str, lo: float = -1.0,
                hi: float = 1.0) -> str:
    """A scatter plot on [lo, hi]^2 with the diagonal y = x."""
    def sx(v: float) -> float:
        return PAD + (min(max(v, lo), hi) - lo) / (hi - lo) * (W - 2 * PAD)

    def sy(v: float) -> float:
        return H - PAD - (min(max(v, lo), hi) - lo) / (hi - lo) * (H - 2 * PAD)

    above = sum(1 for x, y in points if y > x)
    parts = [f"<svg class=plot xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' role=img "
             f"aria-label='{html.escape(y_name)} against {html.escape(x_name)}'>",
             f"<text x='{W / 2}' y='14' text-anchor=middle font-size='12'>{html.escape(y_name)} (y) vs "
             f"{html.escape(x_name)} (x)</text>",
             f"<text x='{W / 2}' y='28' text-anchor=middle font-size='11'>{above} of {len(points)} above "
             "the diagonal</text>",
             f"<rect x='{PAD}' y='{PAD}' width='{W - 2 * PAD}' height='{H - 2 * PAD}' fill='none' stroke='#444'/>",
             f"<line x1='{sx(lo):.1f}' y1='{sy(lo):.1f}' x2='{sx(hi):.1f}' y2='{sy(hi):.1f}' stroke='#aaa' "
             "stroke-dasharray='4 3'/>"]
    for x, y in points:
        parts.append(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='3.5' fill='rgb(30,90,255)' fill-opacity='.7'>"
                     f"<title>{x:.3f}, {y:.3f}</title></circle>")
    parts.append(f"<text x='{W / 2}' y='{H - 8}' text-anchor=middle font-size='11'>{html.escape(x_name)}</text>")
    return "".join(parts) + "</svg>"
