"""The CLI's failures: one clean line and a documented exit code, within seconds."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sluice.serving.cli import EXIT_CODES, build_parser, main, one_line

BIN = Path(sys.executable).parent


def _recipe(folder: Path, extra: str = "", input_glob: str = "in*.jsonl", rows: int = 100) -> str:
    """A recipe over `rows` rows; `extra` holds top-level keys."""
    (folder / "in.jsonl").write_text("".join(json.dumps({"text": f"row {i} " * 20}) + "\n"
                                             for i in range(rows)))
    path = folder / "r.yaml"
    path.write_text(f"name: r\ninput: {folder}/{input_glob}\noutput: {folder}/out\n{extra}"
                    "process:\n  - whitespace_normalization_mapper: {}\n")
    return str(path)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert EXIT_CODES in out and "130" in out


@pytest.mark.parametrize("extra, message", [
    ("ray: {num_cpus: 0}\n", "ray.num_cpus is the number of CPUs"),
    ("ray: {num_cpus: -2}\n", "at least 1"),
    ("ray: {address: 'not an address'}\n", "is not host:port"),
])
def test_bad_ray_settings_fail_at_once(tmp_path, capsys, extra, message):
    start = time.monotonic()
    assert main(["run", _recipe(tmp_path, extra)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and time.monotonic() - start < 10


def test_an_unreachable_cluster_fails_within_seconds(tmp_path, capsys):
    start = time.monotonic()
    assert main(["run", _recipe(tmp_path), "--ray-address", f"127.0.0.1:{_closed_port()}"]) == 2
    assert "cannot reach the Ray cluster" in capsys.readouterr().err
    assert time.monotonic() - start < 10


def test_validate_checks_that_inputs_exist(tmp_path, capsys):
    assert main(["validate", _recipe(tmp_path, input_glob="missing-*.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "missing-*.jsonl" in err and err.count("\n") == 1


def test_error_lines_carry_no_ansi_codes_or_second_lines():
    assert one_line(ValueError("\x1b[31mbad\x1b[0m thing\n  detail")) == "bad thing"


SLOW_OPS = """
import pathlib, time
from sluice.operators import Mapper, param, register

@register
class sleepy_mapper(Mapper):
    \"\"\"Sleeps on every batch, so a run lasts until it is interrupted.\"\"\"
    text_key: str = param("text", doc="unused")

    def process(self, table):
        pathlib.Path(__file__).with_name("started").touch()
        time.sleep(600)
        return table
"""


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_ctrl_c_stops_the_run_and_exits_130(tmp_path, executor):
    (tmp_path / "slow_ops.py").write_text(SLOW_OPS)
    recipe = _recipe(tmp_path, "modules: [slow_ops.py]\n")
    path = Path(recipe)
    path.write_text(path.read_text().replace("whitespace_normalization_mapper", "sleepy_mapper"))
    proc = subprocess.Popen([str(BIN / "sluice"), "run", recipe, "--quiet", "--executor", executor],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # until the run reaches the sleeping mapper
    assert (tmp_path / "started").exists(), "the run never reached the mapper"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    partial = tmp_path / ".out.sluice-partial"
    stopped = "; Ray stopped" if executor == "ray" else ""
    assert err.strip().splitlines()[-1] == (
        f"sluice: interrupted{stopped}; {tmp_path}/out is as it was; the input files finished so far are "
        f"kept in {partial}: add --resume to continue")
    assert partial.is_dir() and not (tmp_path / "out").exists()
    assert not any("Traceback" in line for line in err.splitlines())
