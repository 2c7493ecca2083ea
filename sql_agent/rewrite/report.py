"""Batch report of a rewrite run: one row per query, as CSV, JSON and an HTML page with the
speedups plotted (inline SVG, no external assets)."""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

FIELDS = ["query", "verdict", "source", "speedup", "best_verified_speedup", "original_s",
          "candidates", "rows", "error"]


def summary_row(name: str, result=None, error: str | None = None) -> dict:
    """One report row from a RewriteResult (or the error that stopped the query)."""
    if result is None:
        return {"query": name, "verdict": "error", "source": "", "speedup": None,
                "best_verified_speedup": None, "original_s": None, "candidates": 0,
                "rows": None, "error": error}
    verified = [c.speedup for c in result.candidates if c.speedup is not None]
    return {"query": name, "verdict": "rewritten" if result.accepted else "kept original",
            "source": result.source or "", "speedup": result.speedup,
            "best_verified_speedup": max(verified, default=None),
            "original_s": result.original_s, "candidates": len(result.candidates),
            "rows": result.rows, "error": ""}


def totals(rows: list[dict], min_speedup: float) -> dict:
    productive = [r["speedup"] for r in rows if r["speedup"] and r["speedup"] >= min_speedup]
    geo = math.exp(sum(math.log(s) for s in productive) / len(productive)) if productive else None
    return {"queries": len(rows), "rewritten": sum(r["verdict"] == "rewritten" for r in rows),
            "errors": sum(r["verdict"] == "error" for r in rows),
            "productive": len(productive), "geomean_productive_speedup": geo}


def _svg(rows: list[dict], min_speedup: float) -> str:
    width, bar, top = 720, 18, 20
    values = [r["best_verified_speedup"] or 0.0 for r in rows]
    hi = max([min_speedup * 1.2, *values])
    scale = (width - 200) / hi
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{top * 2 + bar * len(rows)}" font-family="sans-serif" font-size="11">']
    for i, (r, v) in enumerate(zip(rows, values)):
        y = top + i * bar
        color = "#2a7" if r["verdict"] == "rewritten" else ("#c33" if r["verdict"] == "error" else "#999")
        parts.append(f'<text x="0" y="{y + 12}">{html.escape(r["query"][:22])}</text>'
                     f'<rect x="150" y="{y + 2}" width="{v * scale:.1f}" height="{bar - 4}" fill="{color}"/>'
                     f'<text x="{155 + v * scale:.1f}" y="{y + 12}">{v:.2f}x</text>')
    for mark, dash in ((1.0, "2,2"), (min_speedup, "6,3")):
        x = 150 + mark * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{top + bar * len(rows)}" '
                     f'stroke="#333" stroke-dasharray="{dash}"/><text x="{x + 2:.1f}" y="{top - 8}">'
                     f'{mark:g}x</text>')
    return "".join(parts) + "</svg>"


def write_report(folder: str | Path, rows: list[dict], details: list[dict],
                 min_speedup: float) -> dict[str, Path]:
    """Write results.csv, results.json (rows, totals and every candidate) and report.html."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "results.csv", "json": folder / "results.json",
             "html": folder / "report.html"}
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    tot = totals(rows, min_speedup)
    paths["json"].write_text(json.dumps({"totals": tot, "queries": rows, "details": details},
                                        indent=1, default=str))
    head = "".join(f"<th>{h}</th>" for h in FIELDS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[k]))}</td>" for k in FIELDS) + "</tr>"
                   for r in rows)
    geo = tot["geomean_productive_speedup"]
    paths["html"].write_text(
        "<!doctype html><meta charset='utf-8'><title>sluice sql rewrite</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style>"
        f"<h1>SQL rewrite report</h1><p>{tot['queries']} queries, {tot['rewritten']} rewritten, "
        f"{tot['productive']} productive (&ge; {min_speedup:g}x), geometric mean "
        f"{'%.2fx' % geo if geo else 'n/a'}, {tot['errors']} errors.</p>"
        "<h2>Best verified speedup per query</h2><p>green: rewrite accepted; grey: original kept "
        "(bar shows the best candidate that kept the result); red: error.</p>"
        f"{_svg(rows, min_speedup)}<h2>Queries</h2><table><tr>{head}</tr>{body}</table>")
    return paths


def _fmt(v) -> str:
    if v is None:
        return ""
    return f"{v:.3f}" if isinstance(v, float) else str(v)
