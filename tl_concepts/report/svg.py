"""Inline SVG plots with axes, ticks and axis labels (no plotting library, no scripts).

* :func:`histogram_svg`: counts of values in equal bins, x and y axes with ticks;
  ``log_y=True`` for heavy-tailed counts (activations over a corpus).
* :func:`scatter_svg`: points with optional interval bars on both axes and the diagonal.

Example:
    >>> svg = histogram_svg([0.1, 0.5, 0.9], title="scores", x_label="correlation")
    >>> svg.startswith("<svg") and "correlation" in svg
    True
"""
from __future__ import annotations

import html
import math
from typing import Sequence

W, H = 440, 280
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 30, 44


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi].

    Example:
        >>> nice_ticks(0, 1)
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + step * 1e-6:
        out.append(round(v, 10) + 0.0)
        v += step
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v != 0 else "0"


def _frame(title: str, x_label: str, y_label: str) -> list[str]:
    return [f"<svg class=plot xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {W} {H}' width='{W}' height='{H}' "
            f"role=img aria-label='{_e(title)}'>",
            f"<text x='{W / 2}' y='16' text-anchor=middle font-size='13'>{_e(title)}</text>",
            f"<text x='{LEFT + (W - LEFT - RIGHT) / 2}' y='{H - 6}' text-anchor=middle font-size='12'>"
            f"{_e(x_label)}</text>",
            f"<text transform='translate(13,{TOP + (H - TOP - BOTTOM) / 2}) rotate(-90)' text-anchor=middle "
            f"font-size='12'>{_e(y_label)}</text>"]


def _axes(parts: list[str], xt: list[tuple[float, str]], yt: list[tuple[float, str]]) -> None:
    """Axis lines and ticks; ``xt``/``yt``: (pixel position, label)."""
    x0, y0 = LEFT, H - BOTTOM
    parts.append(f"<line x1='{x0}' y1='{y0}' x2='{W - RIGHT}' y2='{y0}' stroke='#444'/>")
    parts.append(f"<line x1='{x0}' y1='{TOP}' x2='{x0}' y2='{y0}' stroke='#444'/>")
    for px, lab in xt:
        parts.append(f"<line x1='{px:.1f}' y1='{y0}' x2='{px:.1f}' y2='{y0 + 5}' stroke='#444'/>"
                     f"<text x='{px:.1f}' y='{y0 + 17}' text-anchor=middle font-size='11'>{_e(lab)}</text>")
    for py, lab in yt:
        parts.append(f"<line x1='{x0 - 5}' y1='{py:.1f}' x2='{x0}' y2='{py:.1f}' stroke='#444'/>"
                     f"<line x1='{x0}' y1='{py:.1f}' x2='{W - RIGHT}' y2='{py:.1f}' stroke='#eee'/>"
                     f"<text x='{x0 - 8}' y='{py + 4:.1f}' text-anchor=end font-size='11'>{_e(lab)}</text>")


def histogram_svg(values: Sequence[float], *, title: str, x_label: str = "value", lo: float | None = None,
                  hi: float | None = None, n_bins: int = 20, rgb: tuple[int, int, int] = (30, 90, 255),
                  log_y: bool = False, y_label: str | None = None) -> str:
    """A histogram of ``values`` with labelled axes; ``lo``/``hi`` default to the data range.

    Bars are counts (``log_y``: on a log10 axis, empty bins left blank)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    lo = min(vals, default=0.0) if lo is None else lo
    hi = max(vals, default=1.0) if hi is None else hi
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts = [0] * n_bins
    for v in vals:
        i = int((min(max(v, lo), hi) - lo) / (hi - lo) * n_bins)
        counts[min(i, n_bins - 1)] += 1
    top = max(counts + [1])
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sy(c: float) -> float:
        if log_y:
            return ph * (math.log10(c) + 1) / (math.log10(top) + 1) if c > 0 else 0.0
        return ph * c / top

    parts = _frame(title, x_label, y_label or ("tokens (log scale)" if log_y else "count"))
    bw = pw / n_bins
    for i, c in enumerate(counts):
        h = sy(c)
        a, b = lo + i * (hi - lo) / n_bins, lo + (i + 1) * (hi - lo) / n_bins
        parts.append(f"<rect x='{LEFT + i * bw + .5:.1f}' y='{H - BOTTOM - h:.1f}' width='{max(bw - 1, .5):.1f}' "
                     f"height='{h:.1f}' fill='rgb{rgb}'><title>[{_fmt(a)}, {_fmt(b)}): {c}</title></rect>")
    xt = [(LEFT + (v - lo) / (hi - lo) * pw, _fmt(v)) for v in nice_ticks(lo, hi)]
    if log_y:
        yt = [(H - BOTTOM - sy(10 ** p), f"{10 ** p:,}") for p in range(0, int(math.log10(top)) + 1)]
    else:
        yt = [(H - BOTTOM - sy(v), _fmt(v)) for v in nice_ticks(0, top, 4) if v == int(v)]
    _axes(parts, xt, yt)
    parts.append(f"<text x='{W - RIGHT}' y='{TOP - 4}' text-anchor=end font-size='11'>n = {len(vals)}</text>")
    return "".join(parts) + "</svg>"


def scatter_svg(points: Sequence[tuple[float, float]], *, x_label: str, y_label: str, title: str = "",
                x_err: Sequence[tuple[float, float] | None] = (), y_err: Sequence[tuple[float, float] | None] = (),
                lo: float | None = None, hi: float | None = None, diagonal: bool = True) -> str:
    """A scatter plot on a square range with optional (low, high) interval bars and y = x."""
    xs = [v for p in points for v in p]
    xs += [v for e in list(x_err) + list(y_err) if e for v in e if v is not None]
    lo = min(xs + [0.0]) if lo is None else lo
    hi = max(xs + [0.0]) if hi is None else hi
    pad = (hi - lo) * 0.05 or 0.1
    lo, hi = lo - pad, hi + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(v: float) -> float:
        return LEFT + (min(max(v, lo), hi) - lo) / (hi - lo) * pw

    def sy(v: float) -> float:
        return H - BOTTOM - (min(max(v, lo), hi) - lo) / (hi - lo) * ph

    parts = _frame(title or f"{y_label} vs {x_label}", x_label, y_label)
    ticks = nice_ticks(lo, hi)
    _axes(parts, [(sx(v), _fmt(v)) for v in ticks], [(sy(v), _fmt(v)) for v in ticks])
    if diagonal:
        parts.append(f"<line x1='{sx(lo):.1f}' y1='{sy(lo):.1f}' x2='{sx(hi):.1f}' y2='{sy(hi):.1f}' "
                     "stroke='#999' stroke-dasharray='4 3'><title>y = x</title></line>")
    for i, (x, y) in enumerate(points):
        ex = x_err[i] if i < len(x_err) else None
        ey = y_err[i] if i < len(y_err) else None
        if ex and None not in ex:
            parts.append(f"<line class=err x1='{sx(ex[0]):.1f}' y1='{sy(y):.1f}' x2='{sx(ex[1]):.1f}' "
                         f"y2='{sy(y):.1f}' stroke='rgba(30,90,255,.45)'/>")
        if ey and None not in ey:
            parts.append(f"<line class=err x1='{sx(x):.1f}' y1='{sy(ey[0]):.1f}' x2='{sx(x):.1f}' "
                         f"y2='{sy(ey[1]):.1f}' stroke='rgba(30,90,255,.45)'/>")
        parts.append(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='3.5' fill='rgb(30,90,255)'>"
                     f"<title>x {x:.3f}, y {y:.3f}</title></circle>")
    return "".join(parts) + "</svg>"
