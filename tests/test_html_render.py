"""The reports' HTML comes from autoescaping templates: text from the data is escaped once, the
HTML an operator adds as a section is kept, and the charts have one bar per value."""

import numpy as np

from sluice.operators.html_render import Bar, html_table, svg_bars, svg_histogram
from sluice.operators.report import write_report
from sluice.sql_agent.rewrite.report import write_report as write_rewrite_report

HOSTILE = "<script>alert('x')</script> & co"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"


def test_table_cells_are_escaped_once():
    table = html_table(["name", "n"], [[HOSTILE, 3], [html_table(["inner"], [["ok"]]), 4]])
    assert ESCAPED in table and "<script>" not in table
    assert "<table><tr><th>inner</th></tr>" in table  # a nested table is Markup, kept as HTML
    assert table.count("<tr>") == 3 + 2  # header and two rows, the inner header and row


def test_charts_draw_one_bar_per_value():
    bars = svg_bars([Bar(HOSTILE, 5.0, "5"), Bar("b", 0.0, "0"), Bar("c", 10.0, "10")])
    assert bars.count("<rect") == 3 and ESCAPED in bars and "<script>" not in bars
    histogram = svg_histogram(np.arange(100.0), np.arange(50.0))
    assert histogram.count("<rect") == 2 * 30  # before and kept, 30 bins each


def test_run_report_escapes_data_and_keeps_operator_sections(tmp_path):
    row = {"name": "text_length_filter", "kind": "filter", "rows_in": 10, "rows_out": 7, "dropped": 3,
           "rejected": 0, "seconds": 0.5, "rows_per_s": 20.0}
    summary = {"rows_read": 10, "rows_kept": 7, "dropped": {"text_length_filter": 3}, "rejected": {},
               "accounted": True, "analyze": False, "operators": [row], "rejects": "out/rejects",
               "notes": [HOSTILE]}
    snapshot = {"numeric": {("text_len", "before"): np.arange(10.0)},
                "categories": {("lang", "before"): {HOSTILE: 4, "en": 6}}}
    write_report(tmp_path / "report.html", summary, snapshot,
                 [(f"title {HOSTILE}", "<table><tr><td>from an operator</td></tr></table>")])
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and page.count(ESCAPED) == 3  # the note, the category, the title
    assert "<table><tr><td>from an operator</td></tr></table>" in page
    assert "Read 10 rows; kept 7; dropped 3; rejected 0" in page and "Every row is accounted for." in page
    assert "<h3>text_len</h3>" in page and "<h3>lang</h3>" in page


def test_rewrite_report_escapes_queries_and_errors(tmp_path):
    rows = [{"query": HOSTILE, "verdict": "error", "source": "", "speedup": None,
             "best_verified_speedup": None, "original_s": None, "candidates": 0, "rows": None,
             "error": HOSTILE},
            {"query": "q2", "verdict": "rewritten", "source": "rule", "speedup": 2.5,
             "best_verified_speedup": 2.5, "original_s": 1.0, "candidates": 3, "rows": 10, "error": ""}]
    page = write_rewrite_report(tmp_path, rows, [], 1.1)["html"].read_text()
    assert "<script>" not in page and ESCAPED in page
    assert page.count("<rect") == 2 and "2.50x" in page
    assert "2 queries, 1 rewritten, 1 productive (&ge; 1.1x), geometric mean 2.50x, 1 errors." in page
