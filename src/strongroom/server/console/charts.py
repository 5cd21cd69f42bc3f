"""Charts the console draws on the server: SVG with a title, a description and hover text.

No script and no CDN: each function returns markup (:class:`markupsafe.Markup`,
every label escaped here) that a template puts in the page as it is, works
offline and obeys the console's Content-Security-Policy (colours come from
classes in ``console.css``; no ``style`` attributes). Every chart is
``role="img"`` with a ``<title>`` and a ``<desc>`` saying in words what it
shows; each column or bar carries its own ``<title>`` (a tooltip on hover).
Pages put the same numbers in a table beside the chart, for screen readers
and for copying::

    columns("releases", "Key releases per hour", "48 allowed, 3 denied ...",
            [Bucket("14:00", {"allow": 12, "deny": 1}, "14:00-15:00: 12 allowed, 1 denied")],
            [Series("allow", "allowed", "s-allow"), Series("deny", "denied", "s-deny")])
    bars("egress", "Egress against budgets", "...",
         [Bar("alice", 0.42, 1.0, "1.1 GiB of 256 GiB (0.4 %)", "b-ok")])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup

__all__ = ["Bar", "Bucket", "Series", "bars", "columns", "nice_ceiling"]

#: Drawing width of every chart (the SVG scales to its box; text keeps its size ratio).
WIDTH = 720
#: At most this many labels under the columns (every k-th bucket is labelled).
MAX_X_LABELS = 8


@dataclass(frozen=True)
class Series:
    """One stacked series of a column chart: its key in each bucket, legend label, CSS class."""

    key: str
    label: str
    css: str


@dataclass(frozen=True)
class Bucket:
    """One column: its axis label, the value of each series, and the hover text."""

    label: str
    values: Mapping[str, float] = field(default_factory=dict)
    tip: str = ""


@dataclass(frozen=True)
class Bar:
    """One horizontal bar: a label, a value against a maximum, the text shown beside it."""

    label: str
    value: float
    maximum: float
    text: str
    css: str = "b-ok"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value`` (an axis maximum; 1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value - 1e-9:
            return float(step * power)
    return float(10 * power)  # not reached


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x - round(x)) < 1e-9 else f"{x:,.1f}"


def _frame(ident: str, title: str, desc: str, height: int, body: list[Markup], *,
           width: int = WIDTH) -> Markup:
    t, d = f"{ident}-title", f"{ident}-desc"
    head = Markup('<svg class="chart" id="{}" role="img" viewBox="0 0 {} {}" '
                  'aria-labelledby="{} {}" xmlns="http://www.w3.org/2000/svg">'
                  '<title id="{}">{}</title><desc id="{}">{}</desc>'
                  ).format(ident, width, height, t, d, t, title, d, desc)
    return head + Markup("").join(body) + Markup("</svg>")


def columns(ident: str, title: str, desc: str, buckets: Sequence[Bucket],
            series: Sequence[Series], *, height: int = 240) -> Markup:
    """Stacked columns, one per bucket (oldest left), with a y axis, labels and a legend."""
    left, right, top, bottom = 56, 8, 28, 34
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    totals = [sum(b.values.get(s.key, 0) for s in series) for b in buckets]
    top_value = nice_ceiling(max(totals, default=0))
    body: list[Markup] = []
    for frac in (0.0, 0.5, 1.0):  # grid lines and y labels
        y = f"{top + plot_h * (1 - frac):.1f}"
        body.append(Markup('<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                           '<text x="{}" y="{:.1f}" text-anchor="end">{}</text>').format(
            left, WIDTH - right, y, y, left - 6, float(y) + 4, _num(top_value * frac)))
    x = WIDTH - right
    for s in reversed(series):  # the legend, right-aligned above the plot
        x -= 30 + 7 * len(s.label)
        body.append(Markup('<rect class="{}" x="{}" y="6" width="12" height="12"/>'
                           '<text x="{}" y="16">{}</text>').format(s.css, x, x + 16, s.label))
    n = max(1, len(buckets))
    slot = plot_w / n
    every = max(1, math.ceil(n / MAX_X_LABELS))
    for i, b in enumerate(buckets):
        x0 = left + i * slot + slot * 0.12
        w = max(1.0, slot * 0.76)
        y0 = float(top + plot_h)
        rects: list[Markup] = []
        for s in series:
            v = float(b.values.get(s.key, 0))
            if v <= 0:
                continue
            h = plot_h * v / top_value
            y0 -= h
            rects.append(Markup('<rect class="{}" x="{:.1f}" y="{:.1f}" width="{:.1f}" '
                                'height="{:.1f}"/>').format(s.css, x0, y0, w, h))
        # a transparent full-height target, so the hover text works on empty columns too
        rects.append(Markup('<rect class="hit" x="{:.1f}" y="{}" width="{:.1f}" height="{}"/>'
                            ).format(left + i * slot, top, slot, plot_h))
        body.append(Markup("<g><title>{}</title>{}</g>").format(
            b.tip or b.label, Markup("").join(rects)))
        if i % every == 0:
            body.append(Markup('<text x="{:.1f}" y="{}" text-anchor="middle">{}</text>').format(
                left + (i + 0.5) * slot, height - 12, b.label))
    body.append(Markup('<line class="axis" x1="{}" x2="{}" y1="{}" y2="{}"/>').format(
        left, WIDTH - right, top + plot_h, top + plot_h))
    return _frame(ident, title, desc, height, body)


def bars(ident: str, title: str, desc: str, rows: Sequence[Bar], *,
         label_width: int = 170, text_width: int = 250, width: int = WIDTH) -> Markup:
    """Horizontal bars, one per row: the label, a track to the maximum, the text beside it.

    ``width`` is the drawing's width: a chart for a narrow card draws narrower, so its
    text is not scaled down to nothing.
    """
    row_h, top = 30, 6
    height = top * 2 + row_h * max(1, len(rows))
    track = width - label_width - text_width - 16
    body: list[Markup] = []
    for i, r in enumerate(rows):
        y = top + i * row_h
        frac = 0.0 if r.maximum <= 0 else min(1.0, max(0.0, r.value / r.maximum))
        fill = track * frac
        if 0 < fill < 2:
            fill = 2.0  # a sliver is still visible: not "empty"
        body.append(Markup(
            '<g><title>{}: {}</title><text x="{}" y="{}" text-anchor="end">{}</text>'
            '<rect class="track" x="{}" y="{}" width="{}" height="18"/>'
            '<rect class="{}" x="{}" y="{}" width="{:.1f}" height="18"/>'
            '<text x="{}" y="{}">{}</text></g>').format(
            r.label, r.text, label_width - 8, y + 19, _clip(r.label, 24),
            label_width, y + 6, track, r.css, label_width, y + 6, fill,
            label_width + track + 8, y + 19, _clip(r.text, 40)))
    return _frame(ident, title, desc, height, body, width=width)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"
