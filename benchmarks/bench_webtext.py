"""Throughput of the web-text clean recipe, per operator and per core.

    .venv/bin/python benchmarks/bench_webtext.py --docs 1000000

Builds (once, cached under benchmarks/data/) a corpus of documents of about 400 words drawn
from the vocabulary of the Python standard library's docstrings, with 5% exact duplicates,
runs the built-in `webtext_clean` recipe on it with the default executor (`auto`: in this
process when the text takes at most a fifth of free memory, else on Ray Data), and prints docs/s
per core for every operator (each operator's own time inside the fused stage, so the figure is per core)
and for the fused stage of filters as a whole.
"""

from __future__ import annotations

import argparse
import json
import os
import pydoc
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def vocabulary() -> list[str]:
    words: list[str] = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in ("antigravity", "this"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = __import__(name)
        except Exception:  # noqa: BLE001 - any module that fails to import is simply skipped
            continue
        words += re.findall(r"[A-Za-z][a-z]{1,14}", pydoc.getdoc(module) or "")
    return sorted(set(words))


def make_corpus(directory: Path, docs: int, shards: int, seed: int = 0) -> int:
    """Write `docs` documents as jsonl shards; return the bytes of text written."""
    done = directory / "DONE"
    if done.exists():
        return int(done.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = np.array(vocabulary(), dtype=object)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 0.9  # Zipf-like word frequencies
    weights /= weights.sum()
    per_shard = -(-docs // shards)
    total_bytes = 0
    originals: list[str] = []
    for shard in range(shards):
        n = min(per_shard, docs - shard * per_shard)
        lengths = rng.integers(300, 500, n)
        words = rng.choice(vocab, size=int(lengths.sum()), p=weights)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        with open(directory / f"web-{shard:03d}.jsonl", "w") as f:
            for i in range(n):
                doc = words[offsets[i]:offsets[i + 1]]
                sentences = [" ".join(doc[j:j + 15]).capitalize() + "." for j in range(0, len(doc), 15)]
                text = "\n".join(" ".join(sentences[k:k + 5]) for k in range(0, len(sentences), 5))
                if originals and rng.random() < 0.05:
                    text = originals[int(rng.integers(len(originals)))]
                elif len(originals) < 1000:
                    originals.append(text)
                total_bytes += len(text)
                f.write(json.dumps({"text": text, "url": f"https://example.org/{shard}/{i}"}) + "\n")
        print(f"  wrote shard {shard + 1}/{shards}", file=sys.stderr)
    done.write_text(str(total_bytes))
    return total_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(HERE / "results" / "webtext"))
    args = parser.parse_args()

    from sluice.operators.recipe import load_recipe

    data = HERE / "data" / f"webtext_{args.docs}"
    print(f"corpus: {args.docs:,} documents under {data}", file=sys.stderr)
    text_bytes = make_corpus(data, args.docs, args.shards)
    recipe = load_recipe("webtext_clean", {"data_dir": str(data), "output": args.out,
                                           "num_cpus": str(args.num_cpus)})
    start = time.perf_counter()
    summary = recipe.run(quiet=True).summary
    wall = time.perf_counter() - start

    kinds = {o["name"]: o["kind"] for o in summary["operators"]}
    print(f"\nwebtext_clean on {args.docs:,} docs ({text_bytes / 1e6:,.0f} MB of text), "
          f"{args.num_cpus} CPUs, wall {wall:.1f}s")
    print(f"{'operator':<36}{'kind':<14}{'docs in':>10}{'docs/s/core':>14}")
    for o in summary["operators"]:
        rate = o["rows_in"] / o["seconds"] if o["seconds"] else float("inf")
        print(f"{o['name']:<36}{o['kind']:<14}{o['rows_in']:>10,}{rate:>14,.0f}")
    filters = [o for o in summary["operators"] if kinds[o["name"]] == "filter"]
    fast = [o for o in filters if o["name"] != "language_id_score_filter"]
    mappers = [o for o in summary["operators"] if kinds[o["name"]] == "mapper"]
    for label, group in (("fused filter stage", filters), ("fused filters without language id", fast),
                         ("fused mapper stage", mappers)):
        seconds = sum(o["seconds"] for o in group)
        docs = group[0]["rows_in"] if group else 0
        print(f"{label:<50}{docs / seconds if seconds else 0:>14,.0f} docs/s per core")
    row_local = [o for o in summary["operators"] if kinds[o["name"]] in ("mapper", "filter")]
    seconds = sum(o["seconds"] for o in row_local)
    per_core = row_local[0]["rows_in"] / seconds
    print(f"{'all row-local operators (one fused stage)':<50}{per_core:>14,.0f} docs/s per core "
          "(Data-Juicer side by side: bench_vs_datajuicer.py)")
    print(f"{'end to end':<50}{args.docs / wall / args.num_cpus:>14,.0f} docs/s per core "
          f"({text_bytes / 1e6 / wall / args.num_cpus:.1f} MB/s per core)")
    print(f"kept {summary['rows_kept']:,} of {summary['rows_read']:,}; accounted: {summary['accounted']}")


if __name__ == "__main__":
    main()
