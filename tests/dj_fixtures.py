"""Real-ish text for the Data-Juicer recipe tests and benchmark, and small model files.

Prose comes from the package descriptions (METADATA) installed beside sluice, code from those
packages' .py files, LaTeX and Chinese from tests/data/dj_sample_extra.jsonl; a few prose rows
are repeated with a small edit so the dedups have work. `write_models` trains a SentencePiece
model and writes a bigram ARPA model over its pieces, named as Data-Juicer names its models.
"""

from __future__ import annotations

import json
import math
import sysconfig
from collections import Counter
from pathlib import Path

EXTRA = Path(__file__).parent / "data" / "dj_sample_extra.jsonl"


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _descriptions(limit: int) -> list[str]:
    texts = []
    for meta in sorted(_site_packages().glob("*.dist-info/METADATA")):
        body = meta.read_text(encoding="utf-8", errors="replace").partition("\n\n")[2].strip()
        for block in body.split("\n\n\n"):
            if 300 <= len(block) <= 20_000:
                texts.append(block)
        if len(texts) >= limit:
            break
    return texts[:limit]


def _code(limit: int) -> list[tuple[str, str]]:
    files = []
    for package in ("yaml", "jinja2", "markupsafe", "sqlglot", "ftfy", "langid"):
        for path in sorted((_site_packages() / package).glob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace")
            if 200 <= len(text) <= 50_000:
                files.append((f"{package}/{path.name}", text))
    return files[:limit]


def sample_rows(prose: int = 120, code: int = 40) -> list[dict]:
    """Rows with `text` and `content` (the same text), `suffix` and `meta`."""
    rows = [{"text": t, "suffix": ".md", "meta": {"kind": "prose"}} for t in _descriptions(prose)]
    rows += [{"text": t, "suffix": Path(p).suffix, "meta": {"kind": "code", "path": p}}
             for p, t in _code(code)]
    rows += [json.loads(line) for line in EXTRA.read_text(encoding="utf-8").splitlines() if line]
    near = [dict(r, text=r["text"].replace(".", ". ", 1)) for r in rows[:prose:10]]
    exact = [dict(r) for r in rows[1:prose:15]]
    rows += near + exact
    for row in rows:
        row["content"] = row["text"]
    return rows


def write_sample(path: Path, **sizes) -> list[dict]:
    rows = sample_rows(**sizes)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def write_arpa(path: Path, sentences: list[list[str]], discount: float = 0.5) -> None:
    """A bigram back-off model (absolute discounting) of `sentences`, as an ARPA file."""
    unigrams, bigrams = Counter(), Counter()
    for words in sentences:
        tokens = ["<s>"] + words + ["</s>"]
        unigrams.update(tokens[1:])
        bigrams.update(zip(tokens, tokens[1:]))
    total = sum(unigrams.values()) + 1  # one count's worth of mass for <unk>
    p_uni = {w: c / total for w, c in unigrams.items()}
    p_uni["<unk>"] = 1 / total
    history = Counter()
    for (v, _), c in bigrams.items():
        history[v] += c
    p_bi = {(v, w): (c - discount) / history[v] for (v, w), c in bigrams.items()}
    seen = Counter()
    seen_uni = Counter()
    for (v, w), p in p_bi.items():
        seen[v] += p
        seen_uni[v] += p_uni[w]
    backoff = {v: (1 - seen[v]) / (1 - seen_uni[v]) for v in history if seen_uni[v] < 1}
    lines = ["\\data\\", f"ngram 1={len(p_uni) + 1}", f"ngram 2={len(p_bi)}", "", "\\1-grams:"]
    lines.append(f"-99\t<s>\t{math.log10(backoff.get('<s>', 1.0)):.6f}")
    for w, p in sorted(p_uni.items()):
        bo = f"\t{math.log10(backoff[w]):.6f}" if w in backoff else ""
        lines.append(f"{math.log10(p):.6f}\t{w}{bo}")
    lines += ["", "\\2-grams:"]
    lines += [f"{math.log10(p):.6f}\t{v} {w}" for (v, w), p in sorted(p_bi.items())]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_models(folder: Path, texts: list[str], lang: str = "en", vocab_size: int = 400) -> None:
    """`<lang>.sp.model` trained on `texts` and `<lang>.arpa` over its pieces, in `folder`."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(folder / f"{lang}.sp"),
                                   vocab_size=vocab_size, minloglevel=2, hard_vocab_limit=False,
                                   character_coverage=0.995)
    processor = spm.SentencePieceProcessor(model_file=str(folder / f"{lang}.sp.model"))
    write_arpa(folder / f"{lang}.arpa", [processor.encode_as_pieces(t) for t in texts])


def dj_strip(word: str, specials: set[str]) -> str:
    """Data-Juicer's strip of special characters from both ends of a word, read plainly."""
    begin, end = 0, len(word)
    while begin < end and word[begin] in specials:
        begin += 1
    while end > begin and word[end - 1] in specials:
        end -= 1
    return word[begin:end]
