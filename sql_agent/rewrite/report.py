"""Batch report of a rewrite run: one row per query, as CSV, JSON and an HTML page with the
speedups plotted (inline SVG, no external assets)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from sluice.operators.html_render import Bar, html_table, render, svg_bars

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


COLORS = {"rewritten": "#2a7", "error": "#c33", "kept original": "#999"}


def speedup_chart(rows: list[dict], min_speedup: float):
    """Each query's best verified speedup as a bar, with lines at 1x and at `min_speedup`."""
    values = [r["best_verified_speedup"] or 0.0 for r in rows]
    bars = [Bar(r["query"][:22], v, f"{v:.2f}x", COLORS[r["verdict"]]) for r, v in zip(rows, values)]
    return svg_bars(bars, width=720, label_width=150, text_room=50, least_top=min_speedup * 1.2,
                    marks=[(1.0, "2,2", "1x"), (min_speedup, "6,3", f"{min_speedup:g}x")])


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
    queries = html_table(FIELDS, [[_fmt(r[k]) for k in FIELDS] for r in rows])
    paths["html"].write_text(render("report.html.j2", "sluice.sql_agent.rewrite", totals=tot,
                                    min_speedup=min_speedup, chart=speedup_chart(rows, min_speedup),
                                    queries=queries), encoding="utf-8")
    return paths


def _fmt(v) -> str:
    if v is None:
        return ""
    return f"{v:.3f}" if isinstance(v, float) else str(v)
