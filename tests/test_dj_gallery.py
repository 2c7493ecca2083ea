"""Data-Juicer's gallery recipes (tests/data/dj_recipes) as a Data-Juicer user runs them: only
dataset_path, export_path and np changed. benchmarks/dj_gallery.py runs all 31; here every one
is validated and a few run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dj_fixtures import write_models, write_sample
from sluice.operators.recipe import RecipeError, load_recipe
from sluice.serving.cli import main

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "tests" / "data" / "dj_recipes").glob("*.yaml"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from dj_gallery import with_paths  # noqa: E402


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dj")
    rows = write_sample(folder / "sample.jsonl", prose=40, code=15)
    write_models(folder / "models", [r["text"] for r in rows if r["meta"]["kind"] != "zh"], vocab_size=300)
    return folder


def copy(recipe: Path, sample: Path, out: Path) -> Path:
    path = out / recipe.name
    path.write_text(with_paths(recipe.read_text(encoding="utf-8"), sample / "sample.jsonl",
                               out / "result" / "data.jsonl", 2), encoding="utf-8")
    return path


def test_there_are_31_gallery_recipes():
    assert len(RECIPES) == 31


def test_every_recipe_validates_and_only_a_model_file_is_missing(sample, tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_MODELS", str(tmp_path / "no_models"))
    missing = []
    for recipe in RECIPES:
        try:
            load_recipe(str(copy(recipe, sample, tmp_path)))
        except RecipeError as e:
            assert len(e.errors) == 1 and "perplexity_filter.model_path: no KenLM model for 'en'" in str(e)
            missing.append(recipe.stem)
    assert len(missing) == 20  # the recipes with perplexity_filter
    monkeypatch.setenv("SLUICE_MODELS", str(sample / "models"))
    for recipe in RECIPES:
        ops = load_recipe(str(copy(recipe, sample, tmp_path))).pipeline.ops
        assert ops


@pytest.mark.parametrize("name", ["reproduced_redpajama__redpajama-arxiv",
                                  "data_juicer_recipes__pile-philpaper-refine"])
def test_gallery_recipes_run_as_they_are(name, sample, tmp_path, monkeypatch, ray_session):
    monkeypatch.setenv("SLUICE_MODELS", str(sample / "models"))
    recipe = load_recipe(str(copy(ROOT / "tests" / "data" / "dj_recipes" / f"{name}.yaml", sample, tmp_path)))
    summary = recipe.run(quiet=True).summary
    assert summary["accounted"] and summary["rows_read"] > 50
    assert 0 < summary["rows_kept"] < summary["rows_read"]
    assert not any("tokenization: true without" in n for n in summary["notes"])


def test_tokenization_without_a_model_is_noted_once(sample, tmp_path, monkeypatch, ray_session):
    monkeypatch.setenv("SLUICE_MODELS", str(tmp_path / "no_models"))
    name = "data_juicer_recipes__github_code__stack-code-refine.yaml"
    result = load_recipe(str(copy(ROOT / "tests" / "data" / "dj_recipes" / name, sample, tmp_path))).run(quiet=True)
    notes = [n for n in result.summary["notes"] if "tokenization: true without a SentencePiece model" in n]
    assert len(notes) == 1 and notes[0].startswith("alphanumeric_filter#2: tokenization: true")
    assert result.summary["accounted"] and "tokenization: true without a SentencePiece model" in \
        result.report_path.read_text(encoding="utf-8")


def test_scientific_notation_in_a_data_juicer_config(tmp_path, sample):
    path = tmp_path / "dj.yaml"
    path.write_text(f"""dataset_path: {sample / 'sample.jsonl'}
export_path: {tmp_path / 'out.jsonl'}
np: 1e0
process:
  - text_length_filter: {{min_len: 1.5e1, max_len: 2e5}}
  - alphanumeric_filter: {{max_ratio: 9.5E-1}}
  - words_num_filter: {{max_num: 1e5}}
""")
    ops = load_recipe(str(path)).pipeline.ops
    assert (ops[0].min_len, ops[0].max_len, ops[1].max_ratio, ops[2].max_num) == (15, 200000, 0.95, 100000)
    assert type(ops[0].max_len) is int and load_recipe(str(path)).num_cpus == 1
    path.write_text(path.read_text().replace("min_len: 1.5e1", "min_len: 2.5e0"))
    with pytest.raises(RecipeError, match=r"text_length_filter.min_len: expected int, got float 2.5"):
        load_recipe(str(path))


def test_validate_reports_every_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("""dataset_path: data.jsonl
export_path: out.jsonl
exprot_type: jsonl
process:
  - text_lenght_filter:
  - words_num_filter: {max_num: lots, min_nun: 3}
  - language_id_score_filter: {min_score: 0.5}
""")
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"sluice: error: {path}:3:1: unknown Data-Juicer key 'exprot_type'; did you mean 'export_type'?",
        f"sluice: error: {path}:5:5: unknown operator 'text_lenght_filter'; did you mean 'text_length_filter'?",
        f"sluice: error: {path}:6:33: words_num_filter.max_num: expected int, got str 'lots'",
        f"sluice: error: {path}:6:39: words_num_filter.min_nun: unknown parameter 'min_nun'; did you mean 'min_num'?",
    ]
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err.strip().endswith("(and 3 more: `sluice validate` lists every one)")
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    path.write_text(f"dataset_path: {tmp_path / 'd.jsonl'}\nexport_path: out.jsonl\n")
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ok: recipe 'bad', 1 input(s), 0 operator(s) -> out.jsonl "
                                              "(jsonl; sluice's files in out_sluice)")


def test_sluice_ops_lists_data_juicer_operators(capsys):
    assert main(["ops", "--data-juicer"]) == 0
    out = capsys.readouterr().out
    runs, model, missing = (out.split(f"\n{g} (")[1].split("\n\n")[0] for g in ("runs", "needs a model file", "missing"))
    assert "  document_simhash_deduplicator" in runs and "  perplexity_filter" not in runs
    assert model.splitlines()[1].split()[0] == "perplexity_filter"
    assert "  nlpaug_en_mapper" in missing and "  suffix_filter" not in missing
    assert main(["ops"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("are not in sluice (`sluice ops --data-juicer`)")
