"""Inputs, checkpoints and outputs addressed by URI: a real S3 server on loopback (moto's), read
and written through pyarrow.fs, in this process, on Ray, after an interruption, and on a
two-node cluster whose second node cannot see the driver's files."""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from ray_cluster import two_node_cluster
from sluice.operators import Mapper, Pipeline, create_operator, register
from sluice.operators import io
from sluice.operators.commit import OutputError
from sluice.operators.io import read_output
from sluice.operators.storage import Location
from sluice.serving.testing import free_port

BIN = Path(sys.executable).parent
BUCKET = "sluice-test"


@pytest.fixture(scope="module")
def s3():
    """An S3 server on loopback, and the environment that points S3 clients at it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the S3 server did not start"
                time.sleep(0.2)
        Location.of(f"s3://{BUCKET}?allow_bucket_creation=true").fs.create_dir(BUCKET)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_inputs(folder: Path) -> Path:
    """Three JSON-lines files (one with a malformed line, one large enough to be read in parts
    with a small PART_BYTES) and a Parquet file, with duplicates across files."""
    folder.mkdir(parents=True)
    for k in range(3):
        rows = [{"text": f"doc {i % 70}   from   file {k % 2}", "i": i} for i in range(40 + 200 * (k == 2))]
        (folder / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + ("{bad\n" if k == 1 else ""))
    pq.write_table(pa.table({"text": [f"doc {i}   from   file 0" for i in range(30)], "i": list(range(30))}),
                   folder / "more.parquet")
    return folder


def upload(folder: Path, uri: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            (Location.of(uri) / str(path.relative_to(folder))).write_bytes(path.read_bytes())


def store_tree(uri: str) -> dict[str, bytes]:
    """Every file under `uri` (hidden ones too), by its path under it."""
    root = Location.of(uri)
    infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True, allow_not_found=True))
    return {i.path[len(root.path):]: (root / i.path[len(root.path) + 1:]).read_bytes()
            for i in infos if i.type == pafs.FileType.File}


PIPELINE = Pipeline([create_operator("whitespace_normalization_mapper", {}),
                     create_operator("text_length_filter", {"min_len": 5}),
                     create_operator("document_deduplicator", {})])


def test_a_run_reads_and_writes_an_object_store_as_it_does_a_local_folder(s3, tmp_path, monkeypatch):
    monkeypatch.setattr(io, "PART_BYTES", 4_000)  # the large file is read in line ranges
    inputs = write_inputs(tmp_path / "in")
    upload(inputs, f"s3://{BUCKET}/a/in")
    local = PIPELINE.run(str(inputs), output=tmp_path / "out", executor="local", quiet=True)
    stored = PIPELINE.run(f"s3://{BUCKET}/a/in", output=f"s3://{BUCKET}/a/out", executor="local", quiet=True)

    assert stored.summary["input_parts"] == local.summary["input_parts"] > 4
    assert stored.table().to_pylist() == local.table().to_pylist() and stored.summary["rows_kept"] > 0
    for key in ("rows_read", "rows_kept", "dropped", "rejected", "accounted"):
        assert stored.summary[key] == local.summary[key], key
    assert stored.summary["rejected"] == {"read": 1} and stored.summary["accounted"]
    assert stored.summary["output"] == f"s3://{BUCKET}/a/out/data"
    assert stored.summary["inputs"][0] == f"s3://{BUCKET}/a/in/more.parquet"
    written = store_tree(f"s3://{BUCKET}/a/out")
    assert {"/summary.json", "/report.html", "/.sluice-output"} <= set(written)
    reject, = [json.loads(line) for name, data in written.items() if name.startswith("/rejects/")
               for line in data.decode().splitlines()]
    assert reject["source"] == f"s3://{BUCKET}/a/in/part-1.jsonl" and reject["line"] == 41
    assert not any(k.startswith("/checkpoint") for k in written)
    assert not Location.of(f"s3://{BUCKET}/a/.out.sluice-partial").exists()

    glob = PIPELINE.run(f"s3://{BUCKET}/a/in/*.jsonl", output=f"s3://{BUCKET}/a/out", executor="local", quiet=True)
    assert glob.summary["inputs"] == [f"s3://{BUCKET}/a/in/part-{k}.jsonl" for k in range(3)]
    assert store_tree(f"s3://{BUCKET}/a/out")["/summary.json"] != written["/summary.json"]  # replaced

    (Location.of(f"s3://{BUCKET}/a/theirs") / "notes.txt").write_text("a user's file")
    with pytest.raises(OutputError, match="holds files sluice did not write"):
        PIPELINE.run(f"s3://{BUCKET}/a/in", output=f"s3://{BUCKET}/a/theirs", executor="local", quiet=True)
    with pytest.raises(OutputError, match="is inside the input"):
        PIPELINE.run(f"s3://{BUCKET}/a/in", output=f"s3://{BUCKET}/a/in/out", executor="local", quiet=True)
    assert store_tree(f"s3://{BUCKET}/a/theirs") == {"/notes.txt": b"a user's file"}


@register
class stop_once_mapper(Mapper):
    """Raises KeyboardInterrupt (as Ctrl-C does) the first time it runs in this process."""

    stopped = False

    def process(self, table):
        if not stop_once_mapper.stopped:
            stop_once_mapper.stopped = True
            raise KeyboardInterrupt
        return table


def test_an_interrupted_run_into_an_object_store_resumes_from_its_checkpoint(s3, tmp_path):
    upload(write_inputs(tmp_path / "in"), f"s3://{BUCKET}/b/in")
    expected = PIPELINE.run(f"s3://{BUCKET}/b/in", output=tmp_path / "expected", executor="local", quiet=True)
    pipeline = Pipeline([*PIPELINE.ops, stop_once_mapper()])  # stops after every file is checkpointed
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(f"s3://{BUCKET}/b/in", output=f"s3://{BUCKET}/b/out", executor="local", quiet=True)
    partial = Location.of(f"s3://{BUCKET}/b/.out.sluice-partial")
    checkpoint = partial / "checkpoint"
    assert len(checkpoint.children("[0-9]*.done.json")) == 4  # every input part
    assert [m.name for m in checkpoint.children("after-*.done.json")] == ["after-001.done.json"]  # and the dedup
    assert not Location.of(f"s3://{BUCKET}/b/out").exists()

    resumed = pipeline.run(f"s3://{BUCKET}/b/in", output=f"s3://{BUCKET}/b/out", executor="local", quiet=True,
                           resume=True)
    assert resumed.summary["resumed_parts"] == 4
    assert resumed.table().to_pylist() == expected.table().to_pylist()
    assert resumed.summary["rows_kept"] == expected.summary["rows_kept"] and resumed.summary["accounted"]
    assert not partial.exists()


RECIPE = """
    name: store_test
    input: s3://{bucket}/{prefix}/in
    output: "{{{{ output | default('s3://{bucket}/{prefix}/out') }}}}"
    process:
      - whitespace_normalization_mapper: {{}}
      - text_length_filter: {{min_len: 5}}
      - document_deduplicator: {{}}
"""


def run_recipe(tmp_path: Path, prefix: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    recipe = tmp_path / f"{prefix}.yaml"
    recipe.write_text(textwrap.dedent(RECIPE.format(bucket=BUCKET, prefix=prefix)))
    return subprocess.run([str(BIN / "sluice"), "run", str(recipe), "--quiet", "--executor", "ray", *args],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def test_a_ray_run_reads_and_writes_an_object_store(s3, tmp_path):
    upload(write_inputs(tmp_path / "in"), f"s3://{BUCKET}/c/in")
    expected = PIPELINE.run(str(tmp_path / "in"), output=tmp_path / "expected", executor="local", quiet=True)
    run = run_recipe(tmp_path, "c", env={**os.environ, **s3})
    assert run.returncode == 0, run.stderr
    assert read_output(f"s3://{BUCKET}/c/out/data").to_pylist() == expected.table().to_pylist()
    summary = json.loads(Location.of(f"s3://{BUCKET}/c/out/summary.json").read_text())
    assert summary["executor"] == "ray" and summary["accounted"]
    assert summary["rows_kept"] == expected.summary["rows_kept"]


def private_mount_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", "/mnt"],
        capture_output=True).returncode == 0


@pytest.mark.cluster
def test_a_cluster_whose_second_node_cannot_see_the_drivers_files_loses_no_row(s3, tmp_path):
    """The head takes no tasks (0 CPUs), so every read, checkpoint and write runs on the second
    node, which runs in its own mount namespace with an empty tmpfs over this test's folder: a
    file a task wrote to one of the driver's paths would be lost with the namespace."""
    if not private_mount_works():
        pytest.skip("needs a private mount namespace (unshare --mount, as root)")
    upload(write_inputs(tmp_path / "in"), f"s3://{BUCKET}/d/in")
    expected = PIPELINE.run(str(tmp_path / "in"), output=tmp_path / "expected", executor="local", quiet=True)
    hide = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs tmpfs "{tmp_path}" && exec "$0" "$@"']
    env = {**os.environ, **s3}
    with two_node_cluster(env, head_cpus=0, node_cpus=2, node_prefix=tuple(hide)) as address:
        probe = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import os, ray
            ray.init(address="{address}")
            print(ray.get(ray.remote(lambda: os.path.exists("{tmp_path / 'in'}")).remote()))
        """)], capture_output=True, text=True, timeout=180, env={**env, "RAY_AUTH_MODE": "disabled"})
        assert probe.stdout.strip().splitlines()[-1] == "False", probe.stderr  # the node cannot see the inputs

        refused = run_recipe(tmp_path, "d", "--ray-address", address, "--set", f"output={tmp_path / 'out'}",
                             env={**env, "RAY_AUTH_MODE": "disabled"})
        run = run_recipe(tmp_path, "d", "--ray-address", address, env={**env, "RAY_AUTH_MODE": "disabled"})
    assert refused.returncode == 2 and "is a local path" in refused.stderr and "s3://" in refused.stderr
    assert run.returncode == 0, run.stderr
    assert read_output(f"s3://{BUCKET}/d/out/data").to_pylist() == expected.table().to_pylist()
    summary = json.loads(Location.of(f"s3://{BUCKET}/d/out/summary.json").read_text())
    assert summary["accounted"] and summary["rows_read"] == expected.summary["rows_read"]
