"""What a Data-Juicer config's run leaves behind: the result where export_path says, in the
format its suffix or export_type names, shards by export_shard_size; sluice's own files beside
it; and the global keys that change a run: suffixes, skip_op_error, keep_hashes_in_res_ds."""

from __future__ import annotations

import json
import textwrap

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sluice.operators import Mapper, Pipeline, param, register
from sluice.operators.export import ExportError
from sluice.operators.stage import OperatorFailed
from sluice.operators.recipe import load_recipe

TEXTS = [f"row {i}: " + "a sentence of ordinary words " * (3 + i) for i in range(8)] + ["short"]


def dj_config(tmp_path, export: str, extra: str = "", process: str = "  - text_length_filter: {min_len: 20}"):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(TEXTS)))
    path = tmp_path / "dj.yaml"
    path.write_text(f"dataset_path: '{data}'\nexport_path: '{tmp_path / export}'\nnp: 1\n{extra}\n"
                    f"process:\n{process}\n")
    return load_recipe(str(path))


@pytest.mark.parametrize("suffix", ["jsonl", "json", "parquet"])
def test_export_path_names_the_result_file(suffix, tmp_path, ray_session):
    result = dj_config(tmp_path, f"out/result.{suffix}").run(quiet=True)
    target = tmp_path / "out" / f"result.{suffix}"
    assert result.data_files == [target] and result.summary["output"] == str(target)
    if suffix == "jsonl":
        rows = [json.loads(line) for line in target.read_text().splitlines()]
    elif suffix == "json":
        rows = json.loads(target.read_text())
    else:
        rows = pq.read_table(target).to_pylist()
    assert [r["n"] for r in rows] == list(range(8))  # in input order, "short" dropped
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"result.{suffix}", "result_sluice"]
    run_folder = tmp_path / "out" / "result_sluice"
    assert {"summary.json", "report.html"} <= {p.name for p in run_folder.iterdir()}
    assert not (run_folder / "data").exists()
    assert json.loads((run_folder / "summary.json").read_text())["output_files"] == [str(target)]


def test_no_kept_rows_still_writes_the_file(tmp_path, ray_session):
    result = dj_config(tmp_path, "out/none.json", process="  - text_length_filter: {min_len: 100000}").run(quiet=True)
    assert result.summary["rows_kept"] == 0 and json.loads((tmp_path / "out" / "none.json").read_text()) == []


def test_shards_beside_export_path_and_export_type(tmp_path, ray_session):
    recipe = dj_config(tmp_path, "out/result.data", extra="export_type: jsonl\nexport_shard_size: 5e2")
    files = recipe.run(quiet=True).data_files
    assert len(files) > 2
    width = len(str(len(files))) + 1
    assert [f.name for f in files] == [f"result-{i:0{width}d}-of-{len(files):0{width}d}.jsonl" for i in range(len(files))]
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert [r["n"] for r in rows] == list(range(8))
    sizes = [len(f.read_text().splitlines()) for f in files]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    again = dj_config(tmp_path, "out/result.data", extra="export_type: jsonl\nexport_shard_size: 1e9").run(quiet=True)
    assert [f.name for f in again.data_files] == ["result-00-of-01.jsonl"]  # the earlier shards are gone
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result-00-of-01.jsonl", "result_sluice"]


def test_a_result_file_sluice_did_not_write_is_not_replaced(tmp_path, ray_session):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "result.jsonl").write_text("mine\n")
    with pytest.raises(ExportError, match="exists and no sluice run wrote it; remove it or run with --overwrite"):
        dj_config(tmp_path, "out/result.jsonl").run(quiet=True)
    assert (tmp_path / "out" / "result.jsonl").read_text() == "mine\n"
    with pytest.raises(ValueError, match=r"export_path .*result.csv' must end in .jsonl, .json or .parquet"):
        dj_config(tmp_path, "out/result.csv")


def test_suffixes_select_the_input_files(tmp_path, ray_session):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps({"text": "from the jsonl file, long enough"}) + "\n")
    pq.write_table(pa.table({"text": ["from the parquet file, long enough"]}), folder / "b.parquet")
    path = tmp_path / "dj.yaml"
    path.write_text(f"dataset_path: '{folder}'\nexport_path: '{tmp_path / 'r.jsonl'}'\nsuffixes: ['.jsonl']\n"
                    "work_dir: somewhere\nuse_cache: false\nprocess:\n  - text_length_filter: {}\n")
    result = load_recipe(str(path)).run(quiet=True)
    assert result.table()["text"].to_pylist() == ["from the jsonl file, long enough"]
    assert result.summary["notes"] == ["Data-Juicer keys sluice does not use: work_dir"]


@register
class explode_on_boom_mapper(Mapper):
    """Test operator: raises on a batch holding a row whose text contains 'boom'."""

    text_key: str = param("text", doc="field")

    def process(self, table):
        if pc.any(pc.match_substring(table.column(self.text_key), "boom")).as_py():
            raise RuntimeError("cannot handle boom")
        return table


def test_skip_op_error_rejects_only_the_rows_an_operator_fails_on(tmp_path, ray_session):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["fine one", "a boom here", "fine two"]))
    result = Pipeline([explode_on_boom_mapper()]).run(str(data), tmp_path / "out", quiet=True)
    assert result.table()["text"].to_pylist() == ["fine one", "fine two"]
    rejects = [json.loads(line) for f in result.rejects_path.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [(r["row"]["text"], r["line"], r["reason"]) for r in rejects] == [
        ("a boom here", 2, "explode_on_boom_mapper failed on this row: RuntimeError: cannot handle boom")]
    with pytest.raises(OperatorFailed, match="explode_on_boom_mapper failed on this row"):
        Pipeline([explode_on_boom_mapper()], skip_op_error=False).run(str(data), tmp_path / "out2", quiet=True)
    path = tmp_path / "dj.yaml"
    path.write_text(f"dataset_path: '{data}'\nexport_path: '{tmp_path / 'r.jsonl'}'\nskip_op_error: false\n"
                    "process:\n  - explode_on_boom_mapper:\n")
    with pytest.raises(OperatorFailed) as failed:
        load_recipe(str(path)).run(quiet=True)
    assert str(failed.value) == (f"explode_on_boom_mapper failed on this row: RuntimeError: cannot handle boom "
                                 f"({data}, line 2); with skip_op_error: true such rows go to the rejects")


def test_data_juicer_skip_op_error_and_keep_hashes(tmp_path, ray_session):
    recipe = dj_config(tmp_path, "out/r.jsonl", extra="skip_op_error: false\nkeep_hashes_in_res_ds: true",
                       process=textwrap.indent("- document_simhash_deduplicator: {window_size: 2}", "  "))
    assert recipe.pipeline.skip_op_error is False and recipe.pipeline.ops[0].keep_hash is True
    rows = recipe.run(quiet=True).table().to_pylist()
    assert [r["n"] for r in rows] == [0, 8] and all(r["simhash"].isdigit() for r in rows)  # near copies


def test_the_tracer_writes_what_each_operator_changed_or_dropped(tmp_path, ray_session):
    folder = tmp_path / "in"
    folder.mkdir()
    texts = [f"mail {i}@example.com about item {i}, a long enough line" for i in range(4)] + ["tiny", "tiny2"]
    texts += ["mail 0@example.com about item 0, a long enough line", "plain text that is long enough"]
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": t, "i": i}) + "\n" for i, t in enumerate(texts[:4])))
    (folder / "b.jsonl").write_text("".join(json.dumps({"text": t, "i": i}) + "\n" for i, t in enumerate(texts[4:], 4)))
    config = (f"dataset_path: '{folder}'\nexport_path: '{tmp_path / 'out' / 'r.jsonl'}'\nopen_tracer: true\n"
              "trace_num: 2\n{only}process:\n  - clean_email_mapper:\n  - text_length_filter: {{min_len: 10}}\n"
              "  - document_deduplicator:\n")
    path = tmp_path / "dj.yaml"
    path.write_text(config.format(only=""))
    load_recipe(str(path)).run(quiet=True)
    trace = tmp_path / "out" / "r_sluice" / "trace"

    def lines(name):
        return [json.loads(line) for line in (trace / name).read_text().splitlines()]

    assert sorted(p.name for p in trace.iterdir()) == [
        "duplicate-document_deduplicator.jsonl", "filter-text_length_filter.jsonl", "mapper-clean_email_mapper.jsonl"]
    assert lines("mapper-clean_email_mapper.jsonl") == [
        {"original text": texts[0], "processed_text": "mail  about item 0, a long enough line"},
        {"original text": texts[1], "processed_text": "mail  about item 1, a long enough line"}]
    assert [r["i"] for r in lines("filter-text_length_filter.jsonl")] == [4, 5]
    assert "stats.text_len" in lines("filter-text_length_filter.jsonl")[0]
    assert [r["i"] for r in lines("duplicate-document_deduplicator.jsonl")] == [6]
    path.write_text(config.format(only="op_list_to_trace: [text_length_filter]\n"))
    load_recipe(str(path)).run(quiet=True)
    assert [p.name for p in trace.iterdir()] == ["filter-text_length_filter.jsonl"]


def test_shards_of_json_lines_end_jsonl(tmp_path, ray_session):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    result = Pipeline([]).run(str(data), tmp_path / "out", output_format="jsonl", quiet=True)
    names = [p.name for p in result.data_path.iterdir()]
    assert names and all(n.endswith(".jsonl") for n in names) and result.table().num_rows == len(TEXTS)
