"""Runs never delete what sluice did not write, and an output is whole or as it was."""

import json

import pytest

from sluice.operators import Pipeline, Source, create_operator
from sluice.operators.commit import MARKER, OutputError, partial_folder


def write_inputs(folder, files=3, rows=50):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(files):
        (folder / f"part-{k}.jsonl").write_text(
            "".join(json.dumps({"text": f"file {k} row {i} some words"}) + "\n" for i in range(rows)))
    return folder


def contents(folder):
    """Every file under `folder` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


PIPELINE = Pipeline([create_operator("text_length_filter", {"min_len": 5})])


def test_a_folder_of_the_users_files_is_refused_and_kept(tmp_path):
    inputs = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError) as e:
        PIPELINE.run(str(inputs), output=out, quiet=True)
    assert str(e.value) == (f"output '{out}' holds files sluice did not write; choose a new or empty folder, "
                            "or pass --overwrite (overwrite=True) to replace it")
    assert contents(out) == {"thesis.tex": b"years of work"}
    assert not partial_folder(out).exists()


@pytest.mark.parametrize("where", ["input folder", "inside the input folder", "above the input folder", "input file"])
def test_an_output_that_is_inside_or_holds_an_input_is_refused(tmp_path, where):
    inputs = write_inputs(tmp_path / "data" / "in")
    before = contents(tmp_path)
    out = {"input folder": inputs, "inside the input folder": inputs / "out",
           "above the input folder": tmp_path / "data", "input file": inputs / "part-0.jsonl"}[where]
    with pytest.raises(OutputError, match="choose an output folder outside the inputs") as e:
        PIPELINE.run(str(inputs), output=out, quiet=True, overwrite=True)
    assert "\n" not in str(e.value)
    assert contents(tmp_path) == before


def test_a_recursive_glob_may_not_read_the_output_back(tmp_path):
    inputs = write_inputs(tmp_path / "data")
    with pytest.raises(OutputError, match="is inside the input"):
        PIPELINE.run(str(tmp_path / "data" / "**" / "*.jsonl"), output=inputs / "runs" / "a", quiet=True)


def test_overwrite_replaces_a_users_folder_once_the_run_is_done(ray_session, tmp_path):
    inputs = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("replace me")
    result = PIPELINE.run(str(inputs), output=out, quiet=True, overwrite=True)
    assert result.table().num_rows == 150
    assert not (out / "old.txt").exists() and (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # nothing left beside it


def test_a_failed_run_leaves_the_earlier_output_as_it_was(ray_session, tmp_path):
    """The second run fails in a whole-dataset operator after its rows were read and checkpointed:
    the earlier output is untouched and the unfinished one has no summary."""
    inputs = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    first = PIPELINE.run(str(inputs), output=out, quiet=True)
    assert first.summary["rows_kept"] == 150
    before = contents(out)
    failing = Pipeline([create_operator("source_mixer", {"total_rows": 10_000})])
    with pytest.raises(ValueError, match="has 150 rows available"):
        failing.run([Source(str(inputs), "web", 1.0)], output=out, quiet=True)
    assert contents(out) == before
    partial = partial_folder(out)
    assert not (partial / "summary.json").exists()
    assert len(list((partial / "checkpoint").glob("*.done.json"))) == 3
    # An earlier sluice output is replaced by a run that finishes, without --overwrite.
    second = Pipeline([create_operator("text_length_filter", {"min_len": 5, "max_len": 23})]).run(
        str(inputs), output=out, quiet=True)
    assert second.table().num_rows == second.summary["rows_kept"] < 150
    assert not partial.exists()


def test_resume_continues_the_same_run_and_refuses_a_changed_one(ray_session, tmp_path):
    inputs = write_inputs(tmp_path / "in")
    pipeline = Pipeline([create_operator("text_length_filter", {"min_len": 5}),
                         create_operator("document_deduplicator")])
    failing = Pipeline(pipeline.ops + [create_operator("source_mixer", {"total_rows": 10_000})])
    with pytest.raises(ValueError):
        failing.run([Source(str(inputs), "web", 1.0)], output=tmp_path / "out", quiet=True)
    with pytest.raises(OutputError) as e:
        pipeline.run([Source(str(inputs), "web", 1.0)], output=tmp_path / "out", quiet=True, resume=True)
    assert str(e.value) == (f"cannot resume the run in {partial_folder(tmp_path / 'out')}: the recipe had 3 "
                            "operators and now has 2; run without --resume to start over")
    changed = Pipeline([create_operator("text_length_filter", {"min_len": 6})] + failing.ops[1:])
    with pytest.raises(OutputError, match=r"operator 1 was text_length_filter\(.*min_len=5.*\) and is now "
                                          r"text_length_filter\(.*min_len=6"):
        changed.run([Source(str(inputs), "web", 1.0)], output=tmp_path / "out", quiet=True, resume=True)
    (inputs / "part-1.jsonl").write_text((inputs / "part-1.jsonl").read_text() + '{"text": "one more row"}\n')
    with pytest.raises(OutputError, match="part-1.jsonl' changed"):
        failing.run([Source(str(inputs), "web", 1.0)], output=tmp_path / "out", quiet=True, resume=True)


def test_an_output_written_before_the_marker_existed_counts_as_sluices(ray_session, tmp_path):
    inputs = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"rows_read": 3}))
    (out / "report.html").write_text("<html></html>")
    assert PIPELINE.run(str(inputs), output=out, quiet=True).table().num_rows == 150
    (out / "notes.txt").write_text("mine")  # a user file beside it, and no marker: not recognizably sluice's
    (out / MARKER).unlink()
    with pytest.raises(OutputError, match="holds files sluice did not write"):
        PIPELINE.run(str(inputs), output=out, quiet=True)


def test_a_commit_cut_between_its_renames_is_repaired_by_the_next_run(tmp_path):
    """The earlier output had been set aside and the new one not yet renamed into place: the
    next run puts the earlier one back before it checks anything."""
    inputs = write_inputs(tmp_path / "in")
    aside = tmp_path / ".out.sluice-old"
    aside.mkdir()
    (aside / MARKER).write_text("{}")
    (aside / "summary.json").write_text("{}")
    with pytest.raises(OutputError, match="is inside the input"):  # refused, after the repair
        PIPELINE.run(str(tmp_path / "**" / "*.jsonl"), output=tmp_path / "out", quiet=True)
    assert (tmp_path / "out" / "summary.json").is_file() and not aside.exists()


def test_data_juicers_use_checkpoint_is_resume(tmp_path):
    from sluice.operators.recipe import load_recipe

    write_inputs(tmp_path / "in")
    config = tmp_path / "dj.yaml"
    config.write_text(f"dataset_path: {tmp_path}/in\nexport_path: {tmp_path}/out/result.jsonl\nuse_checkpoint: true\n"
                      "process:\n  - text_length_filter: {min_len: 5}\n")
    assert load_recipe(str(config)).resume
    config.write_text(config.read_text().replace("use_checkpoint: true", "use_checkpoint: false"))
    assert not load_recipe(str(config)).resume


HOLD_THE_OUTPUT = """
import sys
from sluice.operators.commit import prepare
folder = prepare(sys.argv[1], [], [], {"operators": []})
print("locked", flush=True)
sys.stdin.read()  # until the test ends this process
"""


def test_a_second_run_into_an_output_being_written_is_refused_until_the_first_is_gone(tmp_path):
    import subprocess
    import sys

    inputs, out = write_inputs(tmp_path / "in"), tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_OUTPUT, str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        partial = contents(partial_folder(out))
        with pytest.raises(OutputError) as e:
            PIPELINE.run(str(inputs), output=out, quiet=True, executor="local")
        assert str(e.value) == (f"another sluice run (pid {holder.pid}) is writing to {out}; "
                                "wait for it to finish or choose another output")
        assert contents(partial_folder(out)) == partial  # the first run's folder untouched
    finally:
        holder.kill()  # a killed run's lock goes with it
        holder.wait()
    result = PIPELINE.run(str(inputs), output=out, quiet=True, executor="local")
    assert result.summary["rows_kept"] == 150
    PIPELINE.run(str(inputs), output=out, quiet=True, executor="local")  # a finished run let go of it
