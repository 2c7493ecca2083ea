"""Run summary (per operator rows in/out, seconds, rows/s; the row accounting) and HTML report."""

from __future__ import annotations


import numpy as np

from .html_render import Bar, html_table, render, svg_bars, svg_histogram
from .ledger import CRASHED, KEPT, READ, Count, labels
from .storage import Location


def build_summary(pipeline, snapshot: dict, ctx, *, wall_seconds: float, analyze: bool, output_format: str,
                  executor: str, files: list[str], parts: int, resumed_parts: int = 0) -> dict:
    counts = snapshot["counts"]
    read = counts.get(READ, Count(READ))
    operators = [_row(read, "reader")]
    for label, op in zip(labels(pipeline.ops), pipeline.ops):
        if label in counts or op.row_local:  # a whole-dataset operator an analyze-only run skips has none
            operators.append(_row(counts.get(label, Count(label)), op.kind))
    if CRASHED in counts:
        operators.append(_row(counts[CRASHED], "stage"))
    kept = counts.get(KEPT, Count(KEPT)).rows_out
    dropped = {o["name"]: o["dropped"] for o in operators if o["dropped"]}
    rejected = {o["name"]: o["rejected"] for o in operators if o["rejected"]}
    accounted = kept + sum(dropped.values()) + sum(rejected.values())
    return {
        "rows_read": read.rows_in,
        "rows_kept": kept,
        "dropped": dropped,
        "rejected": rejected,
        "accounted": accounted == read.rows_in,
        "analyze": analyze,
        "operators": operators,
        "wall_seconds": round(wall_seconds, 3),
        "input_parts": parts,  # what the reading tasks read: files, or line ranges of large ones
        "resumed_parts": resumed_parts,  # parts taken from an interrupted run's checkpoint
        "executor": executor,
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
    by_note: dict[str, list[str]] = {}
    for label, op in zip(labels(pipeline.ops), pipeline.ops):
        for note in op.notes():
            by_note.setdefault(note, []).append(label)
    return list(pipeline.notes) + [f"{', '.join(labels)}: {note}" for note, labels in by_note.items()]


def _row(count: Count, kind: str) -> dict:
    return {
        "name": count.label, "kind": kind, "rows_in": count.rows_in, "rows_out": count.rows_out,
        "dropped": count.dropped, "rejected": count.rejected,
        "seconds": round(count.seconds, 4),
        "rows_per_s": round(count.rows_in / count.seconds, 1) if count.seconds > 0 else None,
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

OPERATOR_COLUMNS = ("operator", "kind", "in", "out", "dropped", "rejected", "seconds", "rows/s")


def write_report(path: Location, summary: dict, snapshot: dict, sections: list[tuple[str, str]]) -> None:
    """The run's HTML report: the summary, each operator's counts and throughput, each stat's
    distribution, then the sections operators added (their HTML as they wrote it)."""
    operators = html_table(OPERATOR_COLUMNS, [
        [o["name"], o["kind"], f"{o['rows_in']:,}", f"{o['rows_out']:,}", f"{o['dropped']:,}",
         f"{o['rejected']:,}", f"{o['seconds']:.2f}", f"{(o['rows_per_s'] or 0):,.0f}"]
        for o in summary["operators"]])
    speed = svg_bars([Bar(o["name"][:32], o["rows_per_s"], f"{o['rows_per_s']:,.0f} rows/s")
                      for o in summary["operators"] if o["rows_per_s"]])
    path.write_text(render("run_report.html.j2", s=summary, notes=summary.get("notes", []),
                           dropped=sum(summary["dropped"].values()), rejected=sum(summary["rejected"].values()),
                           operators=operators, speed=speed, stats=list(_stat_charts(snapshot)),
                           sections=sections), encoding="utf-8")


def _stat_charts(snapshot: dict):
    """Per stat: a histogram of a numeric stat (before filtering and kept), or bars of the 20
    most common values of a categorical one."""
    numeric, categories = snapshot["numeric"], snapshot["categories"]
    for stat in sorted({s for s, _ in numeric} | {s for s, _ in categories}):
        if (stat, "before") in numeric or (stat, "after") in numeric:
            before = numeric.get((stat, "before"), np.array([]))
            after = numeric.get((stat, "after"))
            base = before if len(before) else after
            if base is None or not len(base):
                continue
            yield {"name": stat, "description": _describe(base), "chart": svg_histogram(base, after)}
        else:
            counts = categories.get((stat, "before")) or categories.get((stat, "after")) or {}
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:20]
            yield {"name": stat, "description": "",
                   "chart": svg_bars([Bar(str(k)[:32], float(v), f"{v:,.0f}") for k, v in top])}


def _describe(values: np.ndarray) -> str:
    q = np.percentile(values, [1, 25, 50, 75, 99])
    return (f"n={len(values):,} sampled; p1 {q[0]:.4g}, p25 {q[1]:.4g}, median {q[2]:.4g}, "
            f"p75 {q[3]:.4g}, p99 {q[4]:.4g}")
