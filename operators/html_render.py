"""HTML and inline SVG for the reports, from the jinja2 templates in `templates/` with
autoescaping on: text from the data (labels, documents, queries, errors) is escaped once, in
the template; what a template returns is `Markup`, inserted into another template as it is."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import jinja2
import numpy as np
from markupsafe import Markup

HIST_BINS = 30
BLUE, GREY = "#3b7dd8", "#b8b8b8"


@lru_cache(maxsize=None)
def environment(package: str) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader(package, "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def render(template: str, package: str = "sluice.operators", **values) -> Markup:
    """`template` from `package`'s templates/ folder, autoescaped."""
    return Markup(environment(package).get_template(template).render(**values))


def html_table(columns: Sequence[str], rows: Sequence[Sequence]) -> Markup:
    """A table with a header row; cells are escaped unless they are Markup."""
    return render("table.html.j2", columns=columns, rows=rows)


def html_items(items: Sequence[tuple[str, object]]) -> Markup:
    """A bullet list of `name: value`."""
    return render("items.html.j2", items=items)


@dataclass
class Bar:
    label: str
    value: float
    text: str            # written after the bar
    color: str = BLUE


def svg_bars(bars: Sequence[Bar], *, width: int = 520, label_width: int = 180, text_room: int = 80,
             marks: Sequence[tuple[float, str, str]] = (), least_top: float = 0.0) -> Markup:
    """Horizontal bars, one a row, scaled to the largest value (at least `least_top`); `marks`
    are (value, dash pattern, text) vertical lines across every row."""
    row, top = 18, 20 if marks else 0
    largest = max([least_top, *(b.value for b in bars), *(m[0] for m in marks)])
    scale = (width - label_width - text_room) / (largest if largest > 0 else 1)
    placed = [{"y": top + i * row, "label": b.label, "length": max(b.value, 0) * scale, "text": b.text,
               "color": b.color} for i, b in enumerate(bars)]
    return render("bars.svg.j2", width=width, height=2 * top + row * len(bars) + 4, row=row, top=top,
                  label_width=label_width, bars=placed,
                  marks=[{"x": label_width + v * scale, "dash": dash, "text": text} for v, dash, text in marks])


def svg_histogram(before: np.ndarray, after: np.ndarray | None, width: int = 520, height: int = 170) -> Markup:
    """Overlaid histograms (before filtering in grey, kept rows in blue) as inline SVG."""
    # The 0.5-99.5 percentile range: a few extreme values would squeeze everything else
    # into one bar; they are counted in the edge bars instead.
    values = before if after is None or not len(after) else np.concatenate([before, after])
    lo, hi = (float(x) for x in np.percentile(values, [0.5, 99.5]))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    series = [(before, GREY)] + ([(after, BLUE)] if after is not None and len(after) else [])
    series = [(np.histogram(np.clip(v, lo, hi), edges)[0], color) for v, color in series]
    top = max(counts.max() for counts, _ in series) or 1
    bar_w = (width - 40) / HIST_BINS
    bars = [{"x": 30 + i * bar_w, "y": height - (height - 10) * c / top, "width": bar_w - 1,
             "height": (height - 10) * c / top, "color": color,
             "title": f"{edges[i]:.4g}–{edges[i + 1]:.4g}: {c}"}
            for counts, color in series for i, c in enumerate(counts)]
    return render("histogram.svg.j2", width=width, height=height, bars=bars, lo=f"{lo:.4g}",
                  hi=f"{hi:.4g}", top=top)
