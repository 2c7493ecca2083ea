"""Model files the text operators can use: SentencePiece tokenizers and KenLM language models.

Data-Juicer names them by language (`en.sp.model`, `en.arpa.bin`) and downloads them; sluice
downloads nothing. An operator takes a model path parameter; when it is empty, sluice looks
for the Data-Juicer file name in one folder, `$SLUICE_MODELS` (default
`~/.cache/sluice/models`), so Data-Juicer's own files put there serve recipes unchanged.

KenLM models: an ARPA text file (`.arpa`) is read by sluice itself (`ArpaModel`, no extra
package); a KenLM binary (`.bin`, Data-Juicer's `en.arpa.bin`) needs the `kenlm` package,
which is used for ARPA files too when it is installed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa

from sluice.operators.base import ParamError
from sluice.operators.once import built_once

MODELS_ENV = "SLUICE_MODELS"


def model_dir() -> Path:
    return Path(os.environ.get(MODELS_ENV) or Path.home() / ".cache" / "sluice" / "models")


def find_model(op: str, param: str, given: str, default_name: str) -> Path | None:
    """The model file `given`, or `default_name` in the models folder, or None when neither
    is there. A path that was given and does not exist is an error."""
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ParamError(op, param, f"model file '{given}' does not exist")
        return path
    path = model_dir() / default_name
    return path if path.is_file() else None


def model_tag(path: Path) -> str:
    """A short name for a model file, for stat names that depend on the model."""
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]


# ---- SentencePiece ----

@built_once(maxsize=8)
def sentencepiece(path: str):
    """The SentencePiece processor of `path`, loaded once per worker process."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    if not processor.Load(path):
        raise ValueError(f"{path} is not a SentencePiece model")
    return processor


def pieces_text(text: pa.Array, path: Path) -> pa.Array:
    """Each row as its SentencePiece pieces joined by spaces (pieces hold no spaces: the model
    writes them as '▁'), so whitespace word splitting then yields the pieces. Per-row Python:
    the tokenizer takes one string at a time."""
    processor = sentencepiece(str(path))
    return pa.array([None if t is None else " ".join(processor.encode_as_pieces(t))
                     for t in text.to_pylist()], pa.string())


def check_sentencepiece(op: str, param: str, path: Path) -> None:
    try:
        sentencepiece(str(path))
    except (OSError, RuntimeError, ValueError) as e:
        raise ParamError(op, param, f"cannot load SentencePiece model '{path}': "
                         f"{(str(e).splitlines() or [''])[0]}") from None


# ---- n-gram language models ----

class ArpaModel:
    """A back-off n-gram model read from an ARPA file, scored as KenLM scores a sentence:
    log10 p(w | history) for each word and the end-of-sentence token, the sentence starting
    with `<s>`; an unseen n-gram backs off to shorter histories, adding their back-off
    weights; a word not in the vocabulary is `<unk>`."""

    def __init__(self, path: Path):
        self.probs: dict[tuple[str, ...], float] = {}
        self.backoffs: dict[tuple[str, ...], float] = {}
        self.order = 0
        order = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("ngram ") or line == "\\data\\":
                    continue
                if line.startswith("\\") and line.endswith("-grams:"):
                    order = int(line[1:line.index("-")])
                    self.order = max(self.order, order)
                    continue
                if line == "\\end\\":
                    break
                if order == 0:
                    continue
                parts = line.split()
                if len(parts) < order + 1:
                    raise ValueError(f"{path}: malformed {order}-gram line {line[:80]!r}")
                words = tuple(parts[1:order + 1])
                self.probs[words] = float(parts[0])
                if len(parts) > order + 1:
                    self.backoffs[words] = float(parts[order + 1])
        if not self.order or ("<unk>",) not in self.probs:
            if not self.order:
                raise ValueError(f"{path}: no n-grams (not an ARPA file)")
            self.probs[("<unk>",)] = -100.0  # KenLM's value for a model without <unk>

    def word_score(self, history: tuple[str, ...], word: str) -> float:
        """log10 p(word | history); `history` holds at most order - 1 words."""
        if (word,) not in self.probs:
            word = "<unk>"
        penalty = 0.0
        while True:
            gram = history + (word,)
            if gram in self.probs:
                return penalty + self.probs[gram]
            penalty += self.backoffs.get(history, 0.0)
            history = history[1:]

    def score(self, sentence: str) -> float:
        history: tuple[str, ...] = ("<s>",)
        total = 0.0
        for word in sentence.split() + ["</s>"]:
            total += self.word_score(history, word)
            history = (history + (word,))[-(self.order - 1):] if self.order > 1 else ()
        return total


def _has_kenlm() -> bool:
    import importlib.util

    return importlib.util.find_spec("kenlm") is not None


@built_once(maxsize=4)
def language_model(path: str):
    """A model with `score(sentence) -> log10 probability`: KenLM's when the `kenlm` package
    is installed, otherwise sluice's ARPA reader (ARPA files only)."""
    if _has_kenlm():
        import kenlm

        return kenlm.Model(path)
    return ArpaModel(Path(path))


def check_language_model(op: str, param: str, path: Path) -> None:
    """A model that cannot be read without the kenlm package fails here, before a run reads
    anything (the model itself, maybe gigabytes, loads in each worker)."""
    if not path.name.endswith(".arpa") and not _has_kenlm():
        raise ParamError(op, param, f"'{path}' is not an ARPA text file (.arpa): a KenLM binary "
                         "model needs the kenlm package (pip install kenlm)")


def perplexity(model, text: str) -> float:
    """Data-Juicer's perplexity: 10 ** -(sum of line scores / (words + one end per line)),
    rounded to one decimal; 0.0 for a text without lines."""
    logits, length = 0.0, 0
    for line in text.splitlines():
        logits += model.score(line)
        length += len(line.split()) + 1
    return round(10.0 ** (-logits / length), 1) if length else 0.0


__all__ = ["model_dir", "find_model", "model_tag", "sentencepiece", "pieces_text", "ArpaModel",
           "language_model", "perplexity", "check_sentencepiece", "check_language_model"]
