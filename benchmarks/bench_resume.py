"""Crash and resume: the `webtext_clean` run killed with SIGKILL at random points and resumed.

    .venv/bin/python benchmarks/bench_resume.py --docs 1000000 --shards 32 --kills 3
    .venv/bin/python benchmarks/bench_resume.py --docs 300000 --kill-workers-every 20

Runs `sluice run webtext_clean` once uninterrupted, then again with the driver killed (SIGKILL)
`--kills` times, each after a random share of the uninterrupted wall time, and `--resume`d after
each kill until it finishes. Prints whether the two outputs hold the same rows (compared as a
multiset of row digests) and the total time of the interrupted runs against the uninterrupted
one. With `--kill-workers-every S`, both runs are on Ray and the second is not killed but has
one of its task workers (a Ray worker process running a task, never an actor) killed with
SIGKILL every S seconds. The corpus is bench_webtext.py's (cached under benchmarks/data/).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_webtext import make_corpus  # noqa: E402

SLUICE = str(Path(sys.executable).parent / "sluice")


def command(data: Path, out: Path, cpus: int, resume: bool, executor: str = "auto") -> list[str]:
    return [SLUICE, "run", "webtext_clean", "--set", f"data_dir={data}", "--set", f"output={out}",
            "--set", f"num_cpus={cpus}", "--quiet", "--executor", executor] + (["--resume"] if resume else [])


def run(cmd: list[str], kill_after: float | None = None, env: dict | None = None) -> tuple[float, bool]:
    """(seconds, whether it finished) of one sluice process, killed after `kill_after` seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return time.perf_counter() - start, False
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return time.perf_counter() - start, True


ACTORS = ("ray::Ledger", "ray::TraceCollector", "ray::_")  # the run's and Ray Data's actors


def task_workers(tag: str) -> list[psutil.Process]:
    """This run's Ray worker processes that are running a task (not idle, not an actor)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            title = (p.info["cmdline"] or [""])[0]
            if (title.startswith("ray::") and title != "ray::IDLE" and not title.startswith(ACTORS)
                    and p.environ().get("SLUICE_BENCH_TAG") == tag):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def kill_workers(tag: str, every: float, stop: threading.Event, killed: list[str]) -> None:
    rng = random.Random(1)
    while not stop.wait(every):
        workers = task_workers(tag)
        if workers:
            victim = rng.choice(workers)
            try:
                title = victim.cmdline()[0]
                victim.kill()
                killed.append(title)
            except psutil.NoSuchProcess:
                pass


def killed_workers_run(data: Path, results: Path, cpus: int, every: float) -> None:
    calm, disturbed = results / "ray-uninterrupted", results / "ray-workers-killed"
    for folder in (calm, disturbed):
        shutil.rmtree(folder, ignore_errors=True)
    baseline, _ = run(command(data, calm, cpus, resume=False, executor="ray"))
    print(f"uninterrupted on Ray: {baseline:.1f}s")
    tag, stop, killed = uuid.uuid4().hex, threading.Event(), []
    killer = threading.Thread(target=kill_workers, args=(tag, every, stop, killed), daemon=True)
    killer.start()
    seconds, _ = run(command(data, disturbed, cpus, resume=False, executor="ray"),
                     env={**os.environ, "SLUICE_BENCH_TAG": tag})
    stop.set()
    summary = json.loads((disturbed / "summary.json").read_text())
    same = row_digests(calm) == row_digests(disturbed)
    print(f"with a task worker killed every {every:g}s: {seconds:.1f}s, {len(killed)} workers killed "
          f"({', '.join(f'{n} {t}' for t, n in sorted(Counter(killed).items()))})")
    print(f"same rows as the uninterrupted run: {same}; rows kept {summary['rows_kept']:,}, accounted: "
          f"{summary['accounted']}; rejected: {summary['rejected']}")
    print(f"time {seconds:.1f}s against {baseline:.1f}s undisturbed: {seconds / baseline:.2f}x")


def row_digests(out: Path) -> Counter:
    import pyarrow.parquet as pq

    digests: Counter = Counter()
    for path in sorted((out / "data").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            digests[hashlib.sha1(json.dumps(row, sort_keys=True).encode()).hexdigest()] += 1
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=40_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kill-workers-every", type=float, metavar="S",
                        help="instead of killing the driver: on Ray, kill a task worker every S seconds")
    parser.add_argument("--out", default=str(HERE / "results" / "resume"))
    args = parser.parse_args()

    data = HERE / "data" / f"webtext_{args.docs}"
    make_corpus(data, args.docs, args.shards)
    results = Path(args.out)
    if args.kill_workers_every:
        killed_workers_run(data, results, args.num_cpus, args.kill_workers_every)
        return
    calm, crashed = results / "uninterrupted", results / "interrupted"
    for folder in (calm, crashed):  # sluice's own outputs from an earlier run of this benchmark
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(folder.parent / f".{folder.name}.sluice-partial", ignore_errors=True)

    baseline, _ = run(command(data, calm, args.num_cpus, resume=False))
    print(f"uninterrupted: {baseline:.1f}s")
    rng = random.Random(args.seed)
    total, tries, finished = 0.0, 0, False
    while not finished:
        kill_after = baseline * rng.uniform(0.2, 0.6) if tries < args.kills else None
        seconds, finished = run(command(data, crashed, args.num_cpus, resume=tries > 0), kill_after)
        partial = crashed.parent / f".{crashed.name}.sluice-partial" / "checkpoint"
        parts = len(list(partial.glob("[0-9]*.done.json"))) if partial.is_dir() else "all"
        stages = len(list(partial.glob("after-*.done.json"))) if partial.is_dir() else "all"
        print(f"try {tries + 1}: {seconds:.1f}s, {'finished' if finished else 'killed'}; input parts done: {parts}; "
              f"whole-dataset stage checkpointed: {stages}")
        total += seconds
        tries += 1
    summary = json.loads((crashed / "summary.json").read_text())
    same = row_digests(calm) == row_digests(crashed)
    print(f"\n{args.docs:,} docs in {args.shards} shards, {args.num_cpus} CPUs, {args.kills} SIGKILLs")
    print(f"same rows as the uninterrupted run: {same}; rows kept {summary['rows_kept']:,}, "
          f"accounted: {summary['accounted']}; last try resumed {summary['resumed_parts']} input parts")
    print(f"total time {total:.1f}s against {baseline:.1f}s uninterrupted: {total / baseline:.2f}x")


if __name__ == "__main__":
    main()
