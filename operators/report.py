"""Run summary (per operator rows in/out, seconds, rows/s; the row accounting) and HTML report."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

HIST_BINS = 30


def build_summary(pipeline, snapshot: dict, driver_counts: dict, ctx, *, wall_seconds: float,
                  analyze: bool, output_format: str, files: list[str], resumed_files: int = 0) -> dict:
    from .pipeline import CRASHED, READ, _labels

    counts = snapshot["counts"]
    read_in, _, read_rejected, read_seconds = counts.get(READ, [0, 0, 0, 0.0])
    operators = [_row(READ, "reader", read_in, read_in - read_rejected, read_rejected, read_seconds)]
    for label, op in zip(_labels(pipeline.ops), pipeline.ops):
        rows_in, rows_out, rejected, seconds = counts.get(label, [0, 0, 0, 0.0])
        if label in driver_counts:
            rows_in, with_rejects, driver_seconds = driver_counts[label]
            rows_out, seconds = with_rejects - rejected, seconds + driver_seconds
        elif not op.row_local:
            continue  # a whole-dataset operator skipped by an analyze-only run
        operators.append(_row(label, op.kind, rows_in, rows_out, rejected, seconds))
    if CRASHED in counts:  # blocks on which a worker died, rejected by whichever stage met them
        operators.append(_row(CRASHED, "stage", *counts[CRASHED]))
    kept = counts.get("kept", [0, 0, 0, 0.0])[1]
    dropped = {o["name"]: o["dropped"] for o in operators if o["dropped"]}
    rejected = {o["name"]: o["rejected"] for o in operators if o["rejected"]}
    accounted = kept + sum(dropped.values()) + sum(rejected.values())
    return {
        "rows_read": read_in,
        "rows_kept": kept,
        "dropped": dropped,
        "rejected": rejected,
        "accounted": accounted == read_in,
        "analyze": analyze,
        "operators": operators,
        "wall_seconds": round(wall_seconds, 3),
        "resumed_files": resumed_files,  # input files taken from an interrupted run's checkpoint
        "cpus": ctx.num_cpus,
        "inputs": files,
        "output": str(ctx.output_dir / "data"),
        "output_format": output_format,
        "rejects": str(ctx.output_dir / "rejects"),
        "report": str(ctx.output_dir / "report.html"),
        "notes": run_notes(pipeline),
    }


def run_notes(pipeline) -> list[str]:
    """The pipeline's own notes, then each distinct operator note once, naming its operators."""
    from .pipeline import _labels

    by_note: dict[str, list[str]] = {}
    for label, op in zip(_labels(pipeline.ops), pipeline.ops):
        for note in op.notes():
            by_note.setdefault(note, []).append(label)
    return list(pipeline.notes) + [f"{', '.join(labels)}: {note}" for note, labels in by_note.items()]


def _row(name: str, kind: str, rows_in: int, rows_out: int, rejected: int, seconds: float) -> dict:
    return {
        "name": name, "kind": kind, "rows_in": rows_in, "rows_out": rows_out,
        "dropped": rows_in - rows_out - rejected, "rejected": rejected,
        "seconds": round(seconds, 4),
        "rows_per_s": round(rows_in / seconds, 1) if seconds > 0 else None,
    }


def format_summary(summary: dict) -> str:
    """The summary as a terminal table."""
    head = f"{'operator':<38}{'in':>10}{'out':>10}{'dropped':>10}{'rejected':>10}{'seconds':>10}{'rows/s':>12}"
    lines = [head, "-" * len(head)]
    for o in summary["operators"]:
        rate = f"{o['rows_per_s']:,.0f}" if o["rows_per_s"] else "-"
        lines.append(f"{o['name']:<38}{o['rows_in']:>10,}{o['rows_out']:>10,}{o['dropped']:>10,}"
                     f"{o['rejected']:>10,}{o['seconds']:>10.2f}{rate:>12}")
    status = "every row accounted for" if summary["accounted"] else "ROW ACCOUNTING MISMATCH"
    lines.append(f"read {summary['rows_read']:,} = kept {summary['rows_kept']:,} + dropped "
                 f"{sum(summary['dropped'].values()):,} + rejected {sum(summary['rejected'].values()):,}"
                 f" ({status}); {summary['wall_seconds']:.1f}s wall")
    lines += [f"note: {note}" for note in summary.get("notes", [])]
    return "\n".join(lines)


# ---- HTML report ----

def svg_histogram(before: np.ndarray, after: np.ndarray | None, width: int = 520, height: int = 170) -> str:
    """Overlaid histograms (before filtering in grey, kept rows in blue) as inline SVG."""
    # The 0.5-99.5 percentile range: a few extreme values would squeeze everything else
    # into one bar; they are counted in the edge bars instead.
    values = before if after is None or not len(after) else np.concatenate([before, after])
    lo, hi = (float(x) for x in np.percentile(values, [0.5, 99.5]))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    series = [(before, "#b8b8b8")] + ([(after, "#3b7dd8")] if after is not None and len(after) else [])
    series = [(np.histogram(np.clip(v, lo, hi), edges)[0], color) for v, color in series]
    top = max(counts.max() for counts, _ in series) or 1
    bar_w = (width - 40) / HIST_BINS
    parts = [f'<svg width="{width}" height="{height + 20}" xmlns="http://www.w3.org/2000/svg">']
    for counts, color in series:
        for i, c in enumerate(counts):
            h = (height - 10) * c / top
            parts.append(f'<rect x="{30 + i * bar_w:.1f}" y="{height - h:.1f}" width="{bar_w - 1:.1f}" '
                         f'height="{h:.1f}" fill="{color}" fill-opacity="0.75"><title>{edges[i]:.4g}–'
                         f'{edges[i + 1]:.4g}: {c}</title></rect>')
    parts.append(f'<text x="30" y="{height + 15}" font-size="11">{lo:.4g}</text>')
    parts.append(f'<text x="{width - 10}" y="{height + 15}" font-size="11" text-anchor="end">{hi:.4g}</text>')
    parts.append(f'<text x="2" y="12" font-size="11">{top}</text></svg>')
    return "".join(parts)


def svg_bars(labels: list[str], values: list[float], unit: str = "", width: int = 520) -> str:
    """Horizontal bar chart as inline SVG."""
    top = max(values) if values and max(values) > 0 else 1
    row = 18
    parts = [f'<svg width="{width}" height="{row * len(labels) + 4}" xmlns="http://www.w3.org/2000/svg">']
    for i, (label, v) in enumerate(zip(labels, values)):
        w = (width - 260) * v / top
        parts.append(f'<text x="0" y="{i * row + 13}" font-size="11">{html.escape(str(label))[:32]}</text>'
                     f'<rect x="180" y="{i * row + 3}" width="{w:.1f}" height="{row - 5}" fill="#3b7dd8"/>'
                     f'<text x="{184 + w:.1f}" y="{i * row + 13}" font-size="11">{v:,.0f}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(path: Path, summary: dict, snapshot: dict, sections: list[tuple[str, str]]) -> None:
    rows = "".join(
        f"<tr><td>{html.escape(o['name'])}</td><td>{o['kind']}</td><td>{o['rows_in']:,}</td>"
        f"<td>{o['rows_out']:,}</td><td>{o['dropped']:,}</td><td>{o['rejected']:,}</td>"
        f"<td>{o['seconds']:.2f}</td><td>{(o['rows_per_s'] or 0):,.0f}</td></tr>"
        for o in summary["operators"])
    ops = [o for o in summary["operators"] if o["rows_per_s"]]
    speed = svg_bars([o["name"] for o in ops], [o["rows_per_s"] for o in ops], " rows/s")
    body = [
        "<h1>sluice run report</h1>",
        f"<p>Read {summary['rows_read']:,} rows; kept {summary['rows_kept']:,}; dropped "
        f"{sum(summary['dropped'].values()):,}; rejected {sum(summary['rejected'].values()):,} "
        f"(see <code>{html.escape(summary['rejects'])}</code>). "
        f"{'Every row is accounted for.' if summary['accounted'] else '<b>Row accounting mismatch.</b>'}"
        f"{' Analyze-only run: nothing was dropped by filters.' if summary['analyze'] else ''}</p>",
        "<table><tr><th>operator</th><th>kind</th><th>in</th><th>out</th><th>dropped</th>"
        f"<th>rejected</th><th>seconds</th><th>rows/s</th></tr>{rows}</table>",
        "".join(f"<p><b>Note:</b> {html.escape(note)}</p>" for note in summary.get("notes", [])),
        f"<h2>Throughput</h2>{speed}",
        "<h2>Stats</h2><p>Grey: values at the filter's input (before filtering). Blue: rows kept "
        "at the end of the run. Hover a bar for its range and count.</p>",
    ]
    numeric, categories = snapshot["numeric"], snapshot["categories"]
    for stat in sorted({s for s, _ in numeric} | {s for s, _ in categories}):
        if (stat, "before") in numeric or (stat, "after") in numeric:
            before = numeric.get((stat, "before"), np.array([]))
            after = numeric.get((stat, "after"))
            base = before if len(before) else after
            if base is None or not len(base):
                continue
            desc = _describe(base)
            body.append(f"<h3>{html.escape(stat)}</h3><p>{desc}</p>{svg_histogram(base, after)}")
        else:
            counts = categories.get((stat, "before")) or categories.get((stat, "after")) or {}
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:20]
            body.append(f"<h3>{html.escape(stat)}</h3>"
                        + svg_bars([k for k, _ in top], [float(v) for _, v in top]))
    for title, section in sections:
        body.append(f"<h2>{html.escape(title)}</h2>{section}")
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>sluice report</title>"
                    f"<style>{style}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")


def _describe(values: np.ndarray) -> str:
    q = np.percentile(values, [1, 25, 50, 75, 99])
    return (f"n={len(values):,} sampled; p1 {q[0]:.4g}, p25 {q[1]:.4g}, median {q[2]:.4g}, "
            f"p75 {q[3]:.4g}, p99 {q[4]:.4g}")
