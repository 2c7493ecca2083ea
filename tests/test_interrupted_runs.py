"""Interrupted runs: a run killed with SIGKILL leaves the earlier output as it was, and `--resume`
finishes it with the output an uninterrupted run gives, from the input files the killed run had
finished; Ctrl-C while Ray is starting stops the run with nothing of Ray left behind; a worker
killed mid-run changes nothing in the output."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sluice.operators import Mapper, Pipeline, create_operator, param, register
from sluice.operators.dedup.exact import document_deduplicator
from sluice.operators.commit import OutputError, partial_folder
from sluice.operators.io import read_output
from sluice.operators.recipe import load_recipe

BIN = Path(sys.executable).parent

HOLD_OPS = """
import pathlib, time
import pyarrow.compute as pc
from sluice.operators import Mapper, param, register

@register
class hold_mapper(Mapper):
    \"\"\"Waits on a block holding the word 'slow' for as long as the file `hold` exists.\"\"\"
    text_key: str = param("text", doc="field to look at")

    def process(self, table):
        here = pathlib.Path(__file__).parent
        if pc.any(pc.match_substring(table.column(self.text_key), "slow")).as_py():
            (here / "started").touch()
            while (here / "hold").exists():
                time.sleep(0.1)
        return table
"""


def sluice(*args, env=None):
    return subprocess.run([str(BIN / "sluice"), *args], capture_output=True, text=True, timeout=300, env=env)


def tagged(tag):
    """Processes started with SLUICE_TEST_TAG=tag in their environment (the run's Ray included)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("SLUICE_TEST_TAG") == tag:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def wait_until(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    return condition()


def test_resume_after_sigkill_gives_the_uninterrupted_output(ray_session, tmp_path):
    for k in range(4):
        word = "slow" if k == 3 else "fast"
        rows = [{"text": f"{word} file {k} row {i % 30} words", "i": i} for i in range(60)] + [{"text": "x"}]
        (tmp_path / f"in-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{bad\n")
    (tmp_path / "hold_ops.py").write_text(HOLD_OPS)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""
        name: resume_test
        input: {tmp_path}/in-*.jsonl
        output: {tmp_path}/out
        modules: [hold_ops.py]
        ray: {{num_cpus: 2}}
        process:
          - hold_mapper: {{}}
          - text_length_filter:
              min_len: {{{{ min_len | default(5) }}}}
          - document_deduplicator: {{}}
    """))
    out, partial = tmp_path / "out", tmp_path / ".out.sluice-partial"
    load_recipe(str(recipe)).run(quiet=True)  # the uninterrupted run, in this process (the local executor)
    expected = read_output(str(out / "data")).to_pylist()
    expected_summary = json.loads((out / "summary.json").read_text())
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    (tmp_path / "hold").touch()
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([str(BIN / "sluice"), "run", str(recipe), "--quiet", "--executor", "ray"],
                            env={**os.environ, "SLUICE_TEST_TAG": tag}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: (tmp_path / "started").exists()
                          and len(list(partial.glob("checkpoint/*.done.json"))) == 3, 120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
        assert not (partial / "summary.json").exists()
        leftovers = wait_until(lambda: not tagged(tag), 30)
    finally:
        for p in tagged(tag):  # this test's Ray, should the kill have left any of it
            p.kill()
    assert leftovers, "Ray processes outlived the killed run"

    with pytest.raises(OutputError, match=r"operator 2 was text_length_filter\(.*min_len=5.*\) and is now "
                                          r"text_length_filter\(.*min_len=6"):
        load_recipe(str(recipe), {"min_len": "6"}).run(quiet=True, resume=True)

    (tmp_path / "hold").unlink()
    resumed = sluice("run", str(recipe), "--quiet", "--resume", "--executor", "ray")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed: 3 of 4 input files from the interrupted run" in resumed.stdout
    rows = read_output(str(out / "data")).to_pylist()
    assert rows == expected  # the same rows in the same order, on Ray after a kill as in one process
    summary = json.loads((out / "summary.json").read_text())
    for key in ("rows_read", "rows_kept", "dropped", "rejected", "accounted"):
        assert summary[key] == expected_summary[key], key
    assert summary["accounted"] and summary["rejected"] == {"read": 4}
    rejects = sorted(line for f in (out / "rejects").glob("*.jsonl") for line in f.read_text().splitlines())
    assert len(rejects) == 4 and not partial.exists()


def test_ctrl_c_while_ray_starts_stops_cleanly(tmp_path):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(10)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ninput: {tmp_path}/in.jsonl\noutput: {tmp_path}/out\n"
                      "process:\n  - whitespace_normalization_mapper: {}\n")
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([str(BIN / "sluice"), "run", str(recipe), "--quiet", "--executor", "ray"],
                            env={**os.environ, "SLUICE_TEST_TAG": tag}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        starting = wait_until(lambda: any(p.name() == "raylet" for p in tagged(tag)), 120)
        proc.send_signal(signal.SIGINT)  # Ray's first process is up, the rest are starting
        _, err = proc.communicate(timeout=120)
        gone = wait_until(lambda: not tagged(tag), 30)
    finally:
        for p in tagged(tag):
            p.kill()
    assert starting, "Ray never started"
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("sluice: interrupted; Ray stopped")
    assert "Traceback" not in err
    assert gone, "Ray processes outlived the interrupted run"
    assert not (tmp_path / "out").exists()


@register
class die_once_mapper(Mapper):
    """Kills its own worker process the first time it sees a block holding `word`, unless the file
    `marker` exists (it writes it first): Ray retries the task on a fresh worker."""

    word: str = param(doc="text that sets it off")
    marker: str = param(doc="file that says it has died already")

    def process(self, table):
        if not os.path.exists(self.marker) and pc.any(pc.match_substring(table.column("text"), self.word)).as_py():
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return table


def write_files(folder: Path, files: int, rows: int, text) -> Path:
    """`files` jsonl files of `rows` rows; row i of file k has the text `text(k, i)`."""
    folder.mkdir()
    for k in range(files):
        (folder / f"{k}.jsonl").write_text("".join(json.dumps({"text": text(k, i)}) + "\n" for i in range(rows)))
    return folder


def test_a_worker_killed_in_a_fused_stage_before_and_after_a_dedup_changes_nothing(ray_session, tmp_path):
    inputs = write_files(tmp_path / "in", 3, 40, lambda k, i: f"file {k % 2} row {i} words")
    ops = [die_once_mapper(word="file 1 row 7", marker=str(tmp_path / "died-reading")),
           create_operator("document_deduplicator"),
           die_once_mapper(word="file 0 row 3", marker=str(tmp_path / "died-after-dedup"))]
    killed = Pipeline(ops).run(str(inputs), output=tmp_path / "killed", quiet=True, executor="ray")
    assert (tmp_path / "died-reading").exists() and (tmp_path / "died-after-dedup").exists()
    # What an undisturbed run gives, in input order: file 2 repeats file 0.
    rows = [r["text"] for r in killed.table().to_pylist()]
    assert rows == [f"file {k} row {i} words" for k in (0, 1) for i in range(40)]
    s = killed.summary
    assert (s["rows_read"], s["rows_kept"], s["dropped"], s["rejected"]) == (120, 80, {"document_deduplicator": 40}, {})
    assert s["accounted"]


@register
class die_once_deduplicator(document_deduplicator):
    """Exact dedup whose first partition task kills its own worker (SIGKILL) unless the file
    `marker` exists (it writes it first): Ray retries the task on a fresh worker."""

    marker: str = param(doc="file that says it has died already")

    def first_ids(self, keys):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().first_ids(keys)


def test_a_worker_killed_during_the_dedup_shuffle_changes_nothing(ray_session, tmp_path):
    inputs = write_files(tmp_path / "in", 4, 5_000, lambda k, i: f"row {i % 2000} words {k % 2}")
    marker = tmp_path / "died-in-shuffle"
    dedup = Pipeline([die_once_deduplicator(marker=str(marker))])
    disturbed = dedup.run(str(inputs), output=tmp_path / "killed", quiet=True, executor="ray")
    assert marker.exists()
    rows = disturbed.table().column("text").to_pylist()  # an undisturbed run's: each text once, in input order
    assert rows == [f"row {i} words {k}" for k in (0, 1) for i in range(2000)]
    assert disturbed.summary["accounted"] and disturbed.summary["rejected"] == {}


@register
class logged_deduplicator(document_deduplicator):
    """Exact dedup that adds a line to the file `log` each time it runs."""

    log: str = param(doc="file to add a line to")

    def apply(self, ds, ctx):
        with open(self.log, "a") as f:
            f.write("ran\n")
        return super().apply(ds, ctx)

    def apply_table(self, table, ctx):
        with open(self.log, "a") as f:
            f.write("ran\n")
        return super().apply_table(table, ctx)


@register
class fail_once_deduplicator(document_deduplicator):
    """Exact dedup that fails (RuntimeError) unless the file `marker` exists (it writes it first)."""

    marker: str = param(doc="file that says it has failed already")

    def apply(self, ds, ctx):
        self.fail_once()
        return super().apply(ds, ctx)

    def apply_table(self, table, ctx):
        self.fail_once()
        return super().apply_table(table, ctx)

    def fail_once(self):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            raise RuntimeError("failing once")


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_run_interrupted_after_a_whole_dataset_operator_resumes_after_it(ray_session, tmp_path, executor):
    inputs = write_files(tmp_path / "in", 3, 400, lambda k, i: f"row {i % 150} of  file {k % 2}" + " x" * (i % 7))
    log, marker = tmp_path / "dedup.log", tmp_path / "failed"

    def pipeline():
        return Pipeline([create_operator("text_length_filter", {"min_len": 20}), logged_deduplicator(log=str(log)),
                         create_operator("whitespace_normalization_mapper", {}),
                         create_operator("words_num_filter", {"min_num": 6}),
                         fail_once_deduplicator(marker=str(marker))])

    Path(marker).touch()
    expected = pipeline().run(str(inputs), output=tmp_path / "expected", quiet=True, executor=executor)
    Path(marker).unlink()
    log.unlink()
    with pytest.raises(RuntimeError, match="failing once"):
        pipeline().run(str(inputs), output=tmp_path / "out", quiet=True, executor=executor)
    assert log.read_text() == "ran\n"
    # The rows after the first dedup are some of the checkpointed ones: a local run keeps only their ids.
    checkpoint = partial_folder(tmp_path / "out") / "checkpoint"
    stage = json.loads((checkpoint / "after-001.done.json").read_text())
    saved = pq.read_table(checkpoint / "after-001")
    if executor == "local":
        assert saved.column_names == ["__id__"] and stage["id_columns"][:2] == ["text", "__id__"]
    else:
        assert "text" in saved.column_names and stage["id_columns"] is None
    resumed = pipeline().run(str(inputs), output=tmp_path / "out", quiet=True, executor=executor, resume=True)
    assert log.read_text() == "ran\n"  # the first dedup did not run again
    assert resumed.table().to_pylist() == expected.table().to_pylist()
    for key in ("rows_read", "rows_kept", "dropped", "rejected", "accounted"):
        assert resumed.summary[key] == expected.summary[key], key
    assert resumed.summary["accounted"] and resumed.summary["dropped"]["logged_deduplicator"] > 0
    assert [o["rows_in"] for o in resumed.summary["operators"]] == [o["rows_in"] for o in expected.summary["operators"]]
