"""document_minhash_deduplicator: quality, signature speed and end-to-end throughput.

    python benchmarks/bench_minhash.py quality [--docs 20000]
    python benchmarks/bench_minhash.py signatures [--docs 4000]
    python benchmarks/bench_minhash.py e2e --docs 100000 [--cpus 2]

quality: a corpus of generated documents (Zipf words), near-duplicate copies made with word
edits at several rates, and real duplicated text (the license files of the installed Python
packages, or --real-dir). Ground truth: exact Jaccard of word 5-gram sets for every pair,
by brute force (sparse set intersections of all pairs). Reports precision and recall of
duplicate pairs at threshold 0.8 for the default LSH parameters and a recall-leaning one.

signatures: documents per second on one core, side by side in one run: the default hash, the
datasketch-compatible hash, and datasketch MinHash.bulk, all with word 5-grams and 128
permutations.

e2e: N documents of about 400 words (10% near-duplicate copies) as Parquet, through
Pipeline([document_minhash_deduplicator]) on a local Ray with --cpus CPUs; MB/s per core and
peak memory, sampled every 0.3 s: the private memory of the largest process (driver or Ray
worker, with the task it ran), of all of them together, Ray's object store, and the largest
RSS of any process.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = 400
THRESHOLD = 0.8
EDIT_RATES = (0.002, 0.005, 0.01, 0.02, 0.04, 0.08)


# ---- corpus ----

def vocabulary(size: int = 50_000) -> np.ndarray:
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return np.array(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(size)])


def random_docs(rng, vocab, n: int, words: int = WORDS) -> list[list[str]]:
    ranks = np.minimum(rng.zipf(1.15, (n, words)), len(vocab)) - 1
    return [list(vocab[r]) for r in ranks]


def edit(rng, vocab, doc: list[str], rate: float) -> list[str]:
    """Substitute, insert or delete each word with probability `rate`."""
    out = []
    for word in doc:
        if rng.random() >= rate:
            out.append(word)
            continue
        op = rng.integers(3)
        if op == 0:
            out.append(vocab[rng.integers(len(vocab))])
        elif op == 1:
            out += [word, vocab[rng.integers(len(vocab))]]
    return out


def real_texts(directory: str, limit: int) -> list[str]:
    """License files found under `directory`: real text with real near-duplicates."""
    texts = []
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and path.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if len(text.split()) >= 20:
                texts.append(text)
        if len(texts) >= limit:
            break
    return texts


def shingle_sets(texts: list[str]) -> list[set[str]]:
    """Word 5-grams as the operator makes them (lowercase, split on spaces, short docs whole)."""
    sets = []
    for text in texts:
        units = [u for u in text.lower().split(" ") if u]
        width = min(5, len(units))
        sets.append({" ".join(units[i:i + width]) for i in range(len(units) - width + 1)} if units else set())
    return sets


def exact_pairs(texts: list[str], threshold: float):
    """All pairs (i < j) with exact Jaccard >= threshold, and their similarity, by brute force."""
    from scipy.sparse import csr_matrix, triu

    ids: dict[str, int] = {}
    rows, cols = [], []
    for doc, shingles in enumerate(shingle_sets(texts)):
        for s in shingles:
            cols.append(ids.setdefault(s, len(ids)))
        rows += [doc] * len(shingles)
    x = csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(texts), len(ids)))
    sizes = np.asarray(x.sum(axis=1)).ravel()
    inter = triu(x @ x.T, k=1).tocoo()
    jaccard = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    keep = jaccard >= threshold
    return inter.row[keep], inter.col[keep], jaccard[keep]


# ---- quality ----

def quality(args) -> None:
    import ray
    import ray.data

    from sluice.operators import create_operator
    from sluice.operators.context import RunContext

    rng = np.random.default_rng(1)
    vocab = vocabulary()
    real = real_texts(args.real_dir, limit=args.docs // 10)
    originals = random_docs(rng, vocab, args.docs // 2)
    docs = [" ".join(d) for d in originals]
    while len(docs) < args.docs - len(real):
        source = originals[rng.integers(len(originals))]
        docs.append(" ".join(edit(rng, vocab, source, EDIT_RATES[rng.integers(len(EDIT_RATES))])))
    texts = docs + real
    order = rng.permutation(len(texts))
    texts = [texts[i] for i in order]
    print(f"corpus: {len(texts)} documents ({len(real)} real license texts), edit rates {EDIT_RATES}")

    start = time.perf_counter()
    a, b, jaccard = exact_pairs(texts, THRESHOLD)
    print(f"ground truth: {len(a)} pairs with exact Jaccard >= {THRESHOLD} "
          f"(brute force over all {len(texts) * (len(texts) - 1) // 2} pairs, {time.perf_counter() - start:.1f} s)")

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    table = pa.table({"__id__": pa.array(range(len(texts)), pa.int64()), "text": texts})
    settings = [("128 permutations, datasketch-optimal bands (default)", {}),
                ("256 permutations, datasketch-optimal bands", {"num_permutations": 256}),
                ("128 permutations, 16 bands x 8 rows", {"num_bands": 16, "num_rows_per_band": 8})]
    for label, extra in settings:
        op = create_operator("document_minhash_deduplicator", {
            "num_permutations": 128, "jaccard_threshold": THRESHOLD, "drop": False,
            "cluster_column": "cluster", **extra})
        blocks = [op.prepare(table.slice(i, 2000)) for i in range(0, len(texts), 2000)]
        start = time.perf_counter()
        out = op.apply(ray.data.from_arrow(blocks).materialize(), RunContext(num_cpus=2)).materialize()
        seconds = time.perf_counter() - start
        result = pa.concat_tables(ray.get(out.to_arrow_refs()))
        cluster = np.empty(len(texts), np.int64)
        cluster[result["__id__"].to_numpy()] = result["cluster"].to_numpy()
        report(label, op, cluster, a, b, jaccard, texts, seconds)
    ray.shutdown()


def report(label, op, cluster, a, b, jaccard, texts, seconds) -> None:
    found = cluster[a] == cluster[b]
    # Predicted pairs: every pair of documents in one cluster.
    _, sizes = np.unique(cluster, return_counts=True)
    predicted = int((sizes * (sizes - 1) // 2).sum())
    print(f"\n{label}: bands={op.bands} rows={op.rows}, verify={op.verify} ({seconds:.1f} s on Ray)")
    print(f"  recall    {found.mean():.4f}  ({found.sum()} of {len(a)} true pairs in one cluster)")
    print(f"  precision {found.sum() / max(predicted, 1):.4f}  ({found.sum()} of {predicted} same-cluster pairs "
          f"have exact Jaccard >= {THRESHOLD})")
    # A dropped document (any but the cluster's lowest id) is justified when it has exact
    # Jaccard >= threshold with another document of its cluster.
    order = np.argsort(cluster, kind="stable")
    first = np.ones(len(order), bool)
    first[1:] = cluster[order][1:] != cluster[order][:-1]
    dropped = np.zeros(len(cluster), bool)
    dropped[order[~first]] = True
    justified = np.zeros(len(cluster), bool)
    justified[a[found]] = justified[b[found]] = True
    print(f"  dropped-document precision {justified[dropped].mean():.4f} ({justified[dropped].sum()} of "
          f"{dropped.sum()} dropped documents have a true near-duplicate in their cluster)")
    for lo, hi in ((0.8, 0.85), (0.85, 0.9), (0.9, 1.01)):
        sel = (jaccard >= lo) & (jaccard < hi)
        if sel.any():
            print(f"  recall for true Jaccard in [{lo}, {min(hi, 1.0)}): {found[sel].mean():.4f} ({sel.sum()} pairs)")


# ---- signatures ----

def signatures_speed(args) -> None:
    from datasketch import MinHash

    from sluice.operators.dedup import signatures as sg

    rng = np.random.default_rng(2)
    texts = [" ".join(d) for d in random_docs(rng, vocabulary(), args.docs)]
    array = pa.array(texts)
    shingling = sg.Shingling(window_size=5)
    sg.signatures(array[:10], shingling, 128)  # compile outside the timing
    sg.signatures(array[:10], shingling, 128, datasketch_compatible=True)

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    mb = array.nbytes / 1e6
    fast = timed(lambda: sg.signatures(array, shingling, 128))
    compat = timed(lambda: sg.signatures(array, shingling, 128, datasketch_compatible=True))
    sample = texts[:max(args.docs // 4, 500)]
    start = time.perf_counter()
    shingles = [[s.encode() for s in sh] for sh in shingle_sets(sample)]
    shingling_s = time.perf_counter() - start
    bulk = timed(lambda: MinHash.bulk(shingles, num_perm=128))
    ds_rate = len(sample) / (shingling_s + bulk)
    print(f"{args.docs} documents of {WORDS} words ({mb / args.docs * 1e3:.1f} KB each), word 5-grams, "
          f"128 permutations, one core")
    print(f"  sluice default hash        {args.docs / fast:9.0f} docs/s  {mb / fast:6.1f} MB/s")
    print(f"  sluice datasketch-compat   {args.docs / compat:9.0f} docs/s  {mb / compat:6.1f} MB/s")
    print(f"  datasketch MinHash.bulk    {ds_rate:9.0f} docs/s  (bulk alone {len(sample) / bulk:.0f} docs/s; "
          f"{len(sample)} docs, Python shingling included)")
    print(f"  ratio default / datasketch {args.docs / fast / ds_rate:6.1f}x")
    print(f"  ratio compat  / datasketch {args.docs / compat / ds_rate:6.1f}x")


# ---- end to end ----

def private_bytes(pid: int) -> int:
    """A process's anonymous memory: its heap, not the object-store pages it maps. (USS would
    also count shared-memory pages that no other process has touched yet, such as the object a
    Ray worker is writing, so it overstates a worker.)"""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    return 0


def object_store_bytes() -> int:
    """Bytes in use under /dev/shm, where Ray's local object store lives."""
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class PeakMemory:
    """Peak memory of this process and its descendants (the local Ray runtime), sampled."""

    def __init__(self, interval: float = 0.3):
        self.me, self.interval = psutil.Process(), interval
        self.largest = self.total = self.store = self.rss = 0
        self.largest_task = ""
        self.store_before = object_store_bytes()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            total = 0
            for p in [self.me] + self.me.children(recursive=True):
                try:
                    private, task = private_bytes(p.pid), p.cmdline()[0].strip()
                    self.rss = max(self.rss, p.memory_info().rss)
                except (psutil.Error, OSError, IndexError):
                    continue
                total += private
                if private > self.largest:
                    self.largest, self.largest_task = private, task
            self.total = max(self.total, total)
            self.store = max(self.store, object_store_bytes() - self.store_before)
            time.sleep(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def write_corpus(directory: Path, n: int) -> int:
    rng = np.random.default_rng(3)
    vocab = vocabulary()
    text_bytes, per_file = 0, 50_000
    for start in range(0, n, per_file):
        count = min(per_file, n - start)
        docs = [" ".join(d) for d in random_docs(rng, vocab, count)]
        for i in rng.choice(count, count // 10, replace=False):  # near-duplicates of earlier documents
            docs[i] = " ".join(edit(rng, vocab, docs[rng.integers(count)].split(" "), 0.01))
        column = pa.array(docs)
        text_bytes += column.nbytes
        pq.write_table(pa.table({"text": column}), directory / f"part-{start // per_file:04d}.parquet")
    return text_bytes


def e2e(args) -> None:
    import ray
    import ray.data

    from sluice.operators import Pipeline, create_operator

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        data = Path(tmp) / "in"
        data.mkdir()
        # In a child process, so that the generator's memory does not count in the driver's RSS.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            text_bytes = pool.apply(write_corpus, (data, args.docs))
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        op = create_operator("document_minhash_deduplicator", {"num_permutations": 128,
                                                               "jaccard_threshold": THRESHOLD})
        with PeakMemory() as memory:
            start = time.perf_counter()
            result = Pipeline([op]).run(str(data / "*.parquet"), Path(tmp) / "out", quiet=True,
                                        num_cpus=args.cpus, executor="ray")
            seconds = time.perf_counter() - start
        ray.shutdown()
    summary = result.summary
    mb = text_bytes / 1e6
    print(f"{args.docs} documents, {mb:.0f} MB of text, {args.cpus} CPUs: {seconds:.1f} s, "
          f"{mb / seconds / args.cpus:.1f} MB/s per core, {args.docs / seconds / args.cpus:.0f} docs/s per core")
    print(f"  peak memory: largest process {memory.largest / 2**20:.0f} MiB ({memory.largest_task}), "
          f"all processes {memory.total / 2**20:.0f} MiB, object store {memory.store / 2**30:.1f} GiB, "
          f"largest RSS {memory.rss / 2**20:.0f} MiB (counts the object-store pages a process maps); "
          f"kept {summary['rows_kept']} of {summary['rows_read']}")
    print("  seconds by stage: " + ", ".join(f"{o['name']} {o['seconds']:.1f}" for o in summary["operators"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--docs", type=int, default=20_000)
    q.add_argument("--real-dir", default=sysconfig.get_paths()["purelib"],
                   help="folder searched for license files (real duplicated text)")
    s = sub.add_parser("signatures")
    s.add_argument("--docs", type=int, default=4000)
    e = sub.add_parser("e2e")
    e.add_argument("--docs", type=int, default=100_000)
    e.add_argument("--cpus", type=int, default=2)
    e.add_argument("--tmp", default=None, help="folder for the generated input and the output")
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    {"quality": quality, "signatures": signatures_speed, "e2e": e2e}[args.command](args)


if __name__ == "__main__":
    main()
