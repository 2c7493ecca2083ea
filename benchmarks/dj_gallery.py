"""Run Data-Juicer's 31 gallery text recipes (tests/data/dj_recipes) as they are, with only
dataset_path, export_path and np changed, on a small real-ish sample (tests/dj_fixtures.py);
print, per recipe, whether it ran (rows read -> kept, seconds) or the one line it stopped with.

    .venv/bin/python benchmarks/dj_gallery.py                # no model files: as a user without models
    .venv/bin/python benchmarks/dj_gallery.py --with-models  # SentencePiece + KenLM (ARPA) models
                                                             # trained on the sample, in $SLUICE_MODELS
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "tests" / "data" / "dj_recipes"
sys.path.insert(0, str(ROOT / "tests"))

import dj_fixtures  # noqa: E402


def with_paths(text: str, dataset: Path, export: Path, np_: int) -> str:
    """The recipe's text with only dataset_path, export_path and np replaced."""
    values = {"dataset_path": f"'{dataset}'", "export_path": f"'{export}'", "np": str(np_)}
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
        if n != 1:
            raise ValueError(f"expected one top-level '{key}:' line, found {n}")
    return text


def run_recipe(recipe: Path, dataset: Path, work: Path) -> tuple[bool, str]:
    from sluice.operators.recipe import load_recipe

    copy = work / recipe.name
    copy.write_text(with_paths(recipe.read_text(encoding="utf-8"), dataset,
                               work / "out" / recipe.stem / "result.jsonl", 2), encoding="utf-8")
    started = time.perf_counter()
    try:
        summary = load_recipe(str(copy)).run(quiet=True).summary
    except (ValueError, OSError) as e:
        return False, (str(e).splitlines() or [type(e).__name__])[0].replace(str(copy), recipe.name)
    if not summary["accounted"]:
        return False, "row accounting mismatch"
    notes = f"; {len(summary['notes'])} note(s)" if summary["notes"] else ""
    return True, (f"{summary['rows_read']} -> {summary['rows_kept']} rows, "
                  f"{time.perf_counter() - started:.1f}s{notes}")


def main() -> int:
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--with-models", action="store_true",
                        help="train small SentencePiece and KenLM models on the sample and use them")
    parser.add_argument("--only", help="run only the recipes whose file name contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dj_gallery_") as tmp:
        work = Path(tmp)
        rows = dj_fixtures.write_sample(work / "sample.jsonl")
        os.environ["SLUICE_MODELS"] = str(work / "models")
        if args.with_models:
            dj_fixtures.write_models(work / "models", [r["text"] for r in rows if r["meta"]["kind"] != "zh"])
            dj_fixtures.write_models(work / "models", [r["text"] for r in rows if r["meta"]["kind"] == "zh"],
                                     lang="zh", vocab_size=150)
        recipes = sorted(p for p in RECIPES.glob("*.yaml") if not args.only or args.only in p.name)
        ran = 0
        for recipe in recipes:
            ok, detail = run_recipe(recipe, work / "sample.jsonl", work)
            ran += ok
            print(f"{'ran   ' if ok else 'FAILED'} {recipe.stem:<62} {detail}", flush=True)
        print(f"{ran} of {len(recipes)} recipes ran ({len(rows)} sample rows, "
              f"models: {'trained on the sample' if args.with_models else 'none'})")
        return 0 if ran == len(recipes) else 1


if __name__ == "__main__":
    sys.exit(main())
