"""sluice against Data-Juicer (and datatrove's MinHash) side by side in one run.

    .venv/bin/python benchmarks/bench_vs_datajuicer.py [--docs 3000 100000] [--repeats 3]

Builds once, outside the repository (~/.cache/sluice-bench/dj-1.6.1, reused on later runs), a
virtual environment with Data-Juicer 1.6.1 from PyPI, and one with datatrove. Generates the corpus (bench_webtext's
generator: documents of about 400 words, 5% exact duplicates; one JSON-lines file per size)
and writes one Data-Juicer config per size and task:

- clean: the 10-operator recipe (whitespace normalization, clean emails, clean links, text
  length, word count, alphanumeric, special characters, character and word repetition, exact
  dedup), `np: 2`;
- minhash: `document_minhash_deduplicator` alone (word 5-grams, 128 permutations), `np: 1`.

Each config runs as a whole command with `dj-process --config` and with `sluice run` (which
takes Data-Juicer configs as they are), the two alternated, `--repeats` times each; prints the
medians and the ratio, and checks that both kept the same number of rows. The minhash task also
runs datatrove's MinHash pipeline (signatures, buckets, clusters, filter; one task, one worker,
whitespace words, 5-grams, 14 bands of 9 hashes, which is LSH for 128 permutations at 0.7). Results go to
benchmarks/results/vs_datajuicer.json. Run it on a quiet machine: the figures are wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_webtext import make_corpus

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sluice-bench"
DJ_VERSION = "1.6.1"
DJ_ENV = CACHE / f"dj-{DJ_VERSION}"
DATATROVE_VERSION = "0.10.1"
DATATROVE_ENV = CACHE / f"datatrove-{DATATROVE_VERSION}"
DATATROVE_PIPELINE = """\
import sys
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                              MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.word_tokenizers import WordTokenizer


class Whitespace(WordTokenizer):
    def word_tokenize(self, text):
        return text.split()

    def sent_tokenize(self, text):
        return [text]

    def span_tokenize(self, text):
        return [(0, len(text))]


data, work = sys.argv[1], sys.argv[2]
config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=9)
run = lambda steps, depends=None, tasks=1: LocalPipelineExecutor(  # noqa: E731 (one worker: one core)
    steps, tasks=tasks, workers=1, logging_dir=f"{work}/logs/{steps[-1].name}", depends=depends)
signatures = run([JsonlReader(data), MinhashDedupSignature(f"{work}/signatures", config=config, language=Whitespace())])
buckets = run([MinhashDedupBuckets(f"{work}/signatures", f"{work}/buckets", config=config)], signatures,
              tasks=config.num_buckets)  # datatrove runs one task per band
clusters = run([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove_ids", config=config)], buckets)
run([JsonlReader(data), MinhashDedupFilter(f"{work}/remove_ids"), JsonlWriter(f"{work}/out", compression=None)], clusters).run()
"""

CLEAN = """\
  - whitespace_normalization_mapper:
  - clean_email_mapper:
  - clean_links_mapper:
  - text_length_filter:
      min_len: 100
  - words_num_filter:
      min_num: 20
  - alphanumeric_filter:
      min_ratio: 0.25
  - special_characters_filter:
      max_ratio: 0.25
  - character_repetition_filter:
      rep_len: 10
      max_ratio: 0.5
  - word_repetition_filter:
      rep_len: 10
      max_ratio: 0.5
  - document_deduplicator:
      lowercase: false
"""
MINHASH = """\
  - document_minhash_deduplicator:
      tokenization: space
      window_size: 5
      num_permutations: 128
      jaccard_threshold: 0.7
"""
TASKS = {"clean": (CLEAN, 2), "minhash": (MINHASH, 1)}


def data_juicer() -> Path:
    """dj-process of a Data-Juicer environment built once in the user's cache."""
    command = DJ_ENV / "bin" / "dj-process"
    if not command.exists():
        print(f"building Data-Juicer {DJ_VERSION} in {DJ_ENV} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(DJ_ENV)], check=True)
        # aiohttp: imported by Data-Juicer 1.6.1 at start but not among its declared dependencies
        subprocess.run([str(DJ_ENV / "bin" / "pip"), "install", "-q", f"py-data-juicer=={DJ_VERSION}", "aiohttp"],
                       check=True)
    return command


def datatrove() -> Path:
    """The python of a datatrove environment built once in the user's cache."""
    python = DATATROVE_ENV / "bin" / "python"
    if not python.exists():
        print(f"building datatrove {DATATROVE_VERSION} in {DATATROVE_ENV} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(DATATROVE_ENV)], check=True)
        subprocess.run([str(DATATROVE_ENV / "bin" / "pip"), "install", "-q", f"datatrove=={DATATROVE_VERSION}",
                        "xxhash<4", "regex", "tokenizers", "orjson"], check=True)  # what its MinHash imports beyond the base install
    return python


def run_datatrove(python: Path, data: Path, work: Path) -> tuple[float, int]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "pipeline.py").write_text(DATATROVE_PIPELINE)
    (work / "in").mkdir()
    os.symlink(data, work / "in" / data.name)
    start = time.perf_counter()
    done = subprocess.run([str(python), str(work / "pipeline.py"), str(work / "in"), str(work)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"datatrove failed:\n{done.stderr[-3000:]}")
    return seconds, sum(1 for f in (work / "out").glob("*.jsonl") for _ in open(f))


def corpus(docs: int) -> tuple[Path, int]:
    folder = HERE / "data" / f"vs_dj_{docs}"
    text_bytes = make_corpus(folder, docs, shards=1)
    return folder / "web-000.jsonl", text_bytes


def config(folder: Path, task: str, data: Path, system: str) -> Path:
    ops, np = TASKS[task]
    path = folder / f"{task}-{system}.yaml"
    path.write_text(f"project_name: bench-{task}\ndataset_path: {data}\n"
                    f"export_path: {folder / f'out-{task}-{system}' / 'result.jsonl'}\n"
                    f"np: {np}\ntext_keys: text\nopen_tracer: false\nprocess:\n{ops}")
    return path


def run_once(system: str, cfg: Path, dj: Path) -> tuple[float, int]:
    """Seconds of the whole command and the rows it wrote."""
    out = Path(next(line.split(": ", 1)[1] for line in cfg.read_text().splitlines() if line.startswith("export_path")))
    shutil.rmtree(out.parent, ignore_errors=True)
    if system == "sluice":
        command = [str(ROOT / ".venv" / "bin" / "sluice"), "run", str(cfg), "--quiet"]
    else:
        command = [str(dj), "--config", str(cfg)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cfg.parent)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{system} failed on {cfg}:\n{done.stderr[-3000:]}")
    shards = [out] if out.exists() else sorted(out.parent.glob(f"{out.stem}-*-of-*{out.suffix}"))
    rows = sum(1 for f in shards for _ in open(f))
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="+", default=[3000, 100_000])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    dj = data_juicer()
    trove = datatrove() if "minhash" in args.tasks else None
    results = []
    for docs in args.docs:
        data, text_bytes = corpus(docs)
        work = CACHE / "runs" / f"{docs}"
        work.mkdir(parents=True, exist_ok=True)
        for task in args.tasks:
            configs = {system: config(work, task, data, system) for system in ("sluice", "data-juicer")}
            systems = ["sluice", "data-juicer"] + (["datatrove"] if task == "minhash" else [])
            times: dict[str, list[float]] = {s: [] for s in systems}
            rows: dict[str, int] = {}
            for repeat in range(args.repeats):
                for system in systems if repeat % 2 == 0 else systems[::-1]:
                    if system == "datatrove":
                        seconds, rows[system] = run_datatrove(trove, data, work / "datatrove")
                    else:
                        seconds, rows[system] = run_once(system, configs[system], dj)
                    times[system].append(seconds)
                    print(f"  {docs:,} docs {task} {system}: {seconds:.1f}s, {rows[system]:,} rows", file=sys.stderr)
            median = {s: round(statistics.median(t), 2) for s, t in times.items()}
            results.append({"docs": docs, "text_mb": round(text_bytes / 1e6, 1), "task": task,
                            "np": TASKS[task][1], "median_s": median, "rows": rows, "runs": times,
                            "ratios": {s: round(median[s] / median["sluice"], 2) for s in systems[1:]}})
    print(f"\n{'corpus':>16} {'task':<8} {'np':>3} {'system':<12} {'median':>9} {'vs sluice':>10} rows kept")
    for r in results:
        for system, seconds in r["median_s"].items():
            ratio = f"{r['ratios'][system]:.2f}x" if system in r["ratios"] else "-"
            print(f"{r['docs']:>9,} docs {r['task']:<8} {r['np']:>3} {system:<12} {seconds:>8.1f}s {ratio:>10} "
                  f"{r['rows'][system]:,}")
    out = HERE / "results" / "vs_datajuicer.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"load_average": os.getloadavg(), "results": results}, indent=2))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
