"""`python -m sluice.operators.compile_kernels` (run by the Makefile after installing) compiles
the kernels a run uses, so a first run after install compiles nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
WORDS = "the quick brown fox jumps over a lazy dog while rivers run to the sea".split()


def _web_text(path: Path) -> None:
    """English documents, some exact and some near duplicates of others."""
    rows = []
    for i in range(120):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(80)]
        rows.append(" ".join(words) + f". Document {i % 90} ends here.")
    rows += rows[:10] + [r.replace("ends here", "ends there") for r in rows[10:20]]
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))


def test_after_compiling_ahead_a_local_webtext_clean_run_compiles_no_kernel(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "NUMBA_DEBUG_CACHE": "1"}
    subprocess.run([sys.executable, "-m", "sluice.operators.compile_kernels"], env=env, check=True,
                   capture_output=True, timeout=600)
    _web_text(tmp_path / "web.jsonl")
    run = subprocess.run([str(BIN / "sluice"), "run", "webtext_clean", "--executor", "local", "--quiet",
                          "--set", f"data_dir={tmp_path}", "--set", f"output={tmp_path / 'out'}"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    compiled = [line for line in (run.stdout + run.stderr).splitlines() if "data saved to" in line]
    assert not compiled, "compiled in the run:\n" + "\n".join(compiled)
    assert "data loaded from" in run.stdout + run.stderr
