"""The `sluice` command line end to end, locally and against a two-node Ray cluster."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sluice.operators.io import read_output
from ray_cluster import two_node_cluster

BIN = Path(sys.executable).parent


def sluice(*args, check=True):
    proc = subprocess.run([str(BIN / "sluice"), *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"sluice {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rows = [{"text": f"Line {i % 40}:   some   words   here", "i": i} for i in range(400)]
    rows += [{"text": "tiny", "i": -1}]
    for part in range(4):
        (d / f"in-{part}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows[part::4]) + "{oops\n")
    path = d / "recipe.yaml"
    path.write_text(textwrap.dedent(f"""
        name: cli_test
        input: {d}/*.jsonl
        output: "{{{{ output }}}}"
        process:
          - whitespace_normalization_mapper: {{}}
          - text_length_filter: {{min_len: 10}}
          - document_deduplicator: {{}}
    """))
    return path


def test_run_prints_summary_and_where_output_went(recipe, tmp_path):
    proc = sluice("run", str(recipe), "--set", f"output={tmp_path / 'out'}", "--quiet")
    out = proc.stdout
    assert "every row accounted for" in out
    assert f"output:  {tmp_path / 'out' / 'data'}" in out and "report:" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows_read"] == 405 and summary["rows_kept"] == 40
    assert summary["rejected"] == {"read": 4}
    assert summary["dropped"] == {"text_length_filter": 1, "document_deduplicator": 360}
    texts = read_output(str(tmp_path / "out" / "data")).column("text").to_pylist()
    assert sorted(texts) == sorted(f"Line {i}: some words here" for i in range(40))


def test_run_json_keeps_stdout_to_the_summary_whatever_else_prints(recipe, tmp_path):
    """What vLLM and Ray do (print, write to file descriptor 1, start processes that print), a
    user module does here, at import and per batch: all of it lands on stderr."""
    (tmp_path / "noisy.py").write_text(textwrap.dedent('''
        import os, subprocess
        from sluice.operators import Mapper, register

        print("noise: print at import")
        os.write(1, b"noise: fd 1 at import\\n")
        subprocess.run(["echo", "noise: a child process"], check=True)

        @register
        class noisy_mapper(Mapper):
            """Prints, keeps every row as it is."""
            def process(self, table):
                print("noise: print per batch")
                os.write(1, b"noise: fd 1 per batch\\n")
                return table
    '''))
    noisy = tmp_path / "noisy.yaml"
    noisy.write_text(recipe.read_text().replace("process:\n", f"modules: [{tmp_path / 'noisy.py'}]\n"
                                                "process:\n  - noisy_mapper: {}\n"))
    proc = sluice("run", str(noisy), "--set", f"output={tmp_path / 'out'}", "--quiet", "--json")
    assert json.loads(proc.stdout) == json.loads((tmp_path / "out" / "summary.json").read_text())
    assert json.loads(proc.stdout)["rows_kept"] == 40
    for noise in ("print at import", "fd 1 at import", "a child process", "print per batch", "fd 1 per batch"):
        assert f"noise: {noise}" in proc.stderr


def test_user_errors_are_one_line_with_nonzero_exit(recipe, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("text_length_filter", "text_length_filtr"))
    proc = sluice("validate", str(bad), "--set", "output=x", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "did you mean 'text_length_filter'?" in proc.stderr and f"{bad}:7:5:" in proc.stderr
    missing = sluice("run", "no_such_recipe", check=False)
    assert missing.returncode == 2 and "no such recipe file or built-in recipe" in missing.stderr


def test_ops_lists_operators_and_shows_parameters():
    listing = sluice("ops").stdout
    assert "text_length_filter" in listing and "document_deduplicator" in listing
    detail = sluice("ops", "text_length_filter").stdout
    assert "min_len: int" in detail and "max_len" in detail


@pytest.mark.cluster
def test_same_recipe_by_address_on_a_two_node_cluster_gives_identical_output(recipe, tmp_path):
    """A local output path is refused on a cluster of two nodes until the run says the nodes
    share a filesystem (both run on this machine, so they do)."""
    with two_node_cluster(dict(os.environ)) as address:
        unshared = sluice("run", str(recipe), "--set", f"output={tmp_path / 'cluster'}", "--ray-address", address,
                          "--quiet", check=False)
        assert unshared.returncode == 2 and unshared.stderr.count("\n") == 1
        assert "the Ray cluster has 2 nodes" in unshared.stderr and "--shared-fs" in unshared.stderr
        sluice("run", str(recipe), "--set", f"output={tmp_path / 'cluster'}", "--ray-address", address, "--quiet",
               "--shared-fs")
    sluice("run", str(recipe), "--set", f"output={tmp_path / 'local'}", "--quiet")
    cluster = read_output(str(tmp_path / "cluster" / "data")).to_pylist()
    local = read_output(str(tmp_path / "local" / "data")).to_pylist()
    key = lambda r: (r["text"], r["i"])  # noqa: E731
    assert len(cluster) == 40 and sorted(cluster, key=key) == sorted(local, key=key)
    for name in ("cluster", "local"):
        assert json.loads((tmp_path / name / "summary.json").read_text())["accounted"]
