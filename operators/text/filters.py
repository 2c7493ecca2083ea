"""Built-in text filters. Each computes its stats for a whole batch at once (Arrow kernels, and
numba kernels over code points or word ids) and keeps rows whose stats lie within its
thresholds. Rows whose text is null get null stats, and every filter drops them."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
from typing import Union

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.operators.base import Filter, ParamError, in_range, param, register
from sluice.operators.expression import compile_expression
from sluice.operators.text.language import language_identifier
from sluice.operators.text.models import (check_language_model, check_sentencepiece, find_model,
                                          language_model, model_dir, model_tag, perplexity, pieces_text)
from sluice.operators.text.words import (class_counts, codepoints, count_in, last_batch, load_word_list,
                                         ngram_repetition, ratio, refined_words, text_array, with_nulls)


@dataclasses.dataclass(kw_only=True, repr=False)
class TextFilter(Filter):
    """A filter over one text field. Subclasses set `stat_names` and `text_stats`."""

    text_key: str = param("text", doc="field holding the text")

    def compute_stats(self, table: pa.Table) -> dict[str, pa.Array]:
        return self.text_stats(text_array(self, table))

    def text_stats(self, text: pa.Array) -> dict[str, pa.Array]:
        raise NotImplementedError


TOKENIZER_NOTE = ("tokenization: true without a SentencePiece model (tokenizer_model, or "
                  "<lang>.sp.model in $SLUICE_MODELS): words were split by sluice, so thresholds "
                  "tuned on Data-Juicer's tokenizer may keep or drop other rows")


@dataclasses.dataclass(kw_only=True, repr=False)
class TokenizingFilter(TextFilter):
    """A filter over words; with `tokenization`, the words are a SentencePiece model's pieces."""

    lang: str = param("en", doc="language of the text; names the default tokenizer model "
                                "(<lang>.sp.model)")
    tokenization: bool = param(False, doc="split words with a SentencePiece model (Data-Juicer's "
                                          "<lang>.sp.model): tokenizer_model, or that file in "
                                          "$SLUICE_MODELS; without one sluice splits words and "
                                          "says so in the run summary")
    tokenizer_model: str = param("", doc="SentencePiece model file used when tokenization is true")

    def setup(self):
        self.sp_model = None
        if self.tokenization:
            self.sp_model = find_model(self.name, "tokenizer_model", self.tokenizer_model,
                                       f"{self.lang}.sp.model")
            if self.sp_model is not None:
                check_sentencepiece(self.name, "tokenizer_model", self.sp_model)

    def words_text(self, text: pa.Array) -> pa.Array:
        """The text whose whitespace-separated words are this filter's words."""
        return text if self.sp_model is None else pieces_text(text, self.sp_model)

    def tokenized(self, stat: str) -> str:
        """A stat's name: the tokenizer model changes its value."""
        return stat if self.sp_model is None else f"{stat}_sp{model_tag(self.sp_model)}"

    def notes(self) -> tuple[str, ...]:
        return (TOKENIZER_NOTE,) if self.tokenization and self.sp_model is None else ()


def _suffix(value, default) -> str:
    """Stat-name suffix for a parameter that changes a stat's value."""
    return "" if value == default else f"_{value}"


@register
class text_length_filter(TextFilter):
    """Keeps rows whose text length in characters is within [min_len, max_len]."""

    min_len: int = param(10, ge=0, doc="shortest text kept, in characters")
    max_len: int = param(sys.maxsize, ge=0, doc="longest text kept, in characters")

    stat_names = ("text_len",)

    def text_stats(self, text):
        return {"text_len": pc.utf8_length(text).cast(pa.int64())}

    def keep(self, table):
        return in_range(self.stat(table, "text_len"), self.min_len, self.max_len)


@register
class words_num_filter(TokenizingFilter):
    """Keeps rows whose number of words is within [min_num, max_num]. Words are split on
    spaces, tabs and newlines (or are a SentencePiece model's pieces, see `tokenization`);
    tokens made only of punctuation, symbols or digits do not count."""

    min_num: int = param(10, ge=0, doc="fewest words kept")
    max_num: int = param(sys.maxsize, ge=0, doc="most words kept")

    @property
    def stat_names(self):
        return (self.tokenized("num_words"),)

    def text_stats(self, text):
        return {self.stat_names[0]: with_nulls(refined_words(self.words_text(text)).counts, text)}

    def keep(self, table):
        return in_range(self.stat(table, self.stat_names[0]), self.min_num, self.max_num)


def _char_ratio(text: pa.Array, kind: str) -> pa.Array:
    """Share of the characters of each row that belong to character class `kind`."""
    return with_nulls(ratio(class_counts(text)[kind], np.diff(codepoints(text)[1])), text)


@register
class alphanumeric_filter(TokenizingFilter):
    """Keeps rows whose share of letters and digits (Python's `str.isalnum`) among all
    characters is within [min_ratio, max_ratio]. With `tokenization`, the stat is Data-Juicer's
    `alpha_token_ratio` instead: letters (`str.isalpha`) per token, where tokens are the
    SentencePiece model's pieces, or words split on spaces, tabs and newlines without a model
    (Data-Juicer counts the tokens of a Hugging Face tokenizer, Pythia's)."""

    min_ratio: float = param(0.25, ge=0, doc="lowest ratio kept")
    max_ratio: float = param(float(sys.maxsize), ge=0, doc="highest ratio kept")

    @property
    def stat_names(self):
        return (self.tokenized("alpha_token_ratio") if self.tokenization else "alnum_ratio",)

    def text_stats(self, text):
        if not self.tokenization:
            return {"alnum_ratio": _char_ratio(text, "alnum")}
        letters = class_counts(text)["alpha"]
        tokens = pc.count_substring_regex(self.words_text(text), "[^ \t\n]+")
        tokens = pc.fill_null(tokens, 0).to_numpy(zero_copy_only=False)
        return {self.stat_names[0]: with_nulls(ratio(letters, tokens), text)}

    def keep(self, table):
        return in_range(self.stat(table, self.stat_names[0]), self.min_ratio, self.max_ratio)


@register
class special_characters_filter(TextFilter):
    """Keeps rows whose share of special characters (punctuation, symbols and emoji,
    whitespace, ASCII digits) is within [min_ratio, max_ratio]."""

    min_ratio: float = param(0.0, ge=0, le=1, doc="lowest special-character ratio kept")
    max_ratio: float = param(0.25, ge=0, le=1, doc="highest special-character ratio kept")

    stat_names = ("special_char_ratio",)

    def text_stats(self, text):
        return {"special_char_ratio": _char_ratio(text, "special")}

    def keep(self, table):
        return in_range(self.stat(table, "special_char_ratio"), self.min_ratio, self.max_ratio)


@register
class digit_ratio_filter(TextFilter):
    """Keeps rows whose share of decimal digits (any script) among all characters is within
    [min_ratio, max_ratio]. Not a Data-Juicer operator."""

    min_ratio: float = param(0.0, ge=0, le=1, doc="lowest digit ratio kept")
    max_ratio: float = param(1.0, ge=0, le=1, doc="highest digit ratio kept")

    stat_names = ("digit_ratio",)

    def text_stats(self, text):
        return {"digit_ratio": _char_ratio(text, "digit")}

    def keep(self, table):
        return in_range(self.stat(table, "digit_ratio"), self.min_ratio, self.max_ratio)


@register
class character_repetition_filter(TextFilter):
    """Keeps rows whose character n-gram repetition ratio (Data-Juicer's definition: the
    share of all n-grams taken by the sqrt(#distinct) most frequent repeated ones) is within
    [min_ratio, max_ratio]. High values mean boilerplate or repeated spam."""

    rep_len: int = param(10, ge=1, doc="n-gram length in characters")
    min_ratio: float = param(0.0, ge=0, le=1, doc="lowest repetition ratio kept")
    max_ratio: float = param(0.5, ge=0, le=1, doc="highest repetition ratio kept")

    @property
    def stat_names(self):
        return ("char_rep_ratio" + _suffix(self.rep_len, 10),)

    def text_stats(self, text):
        cps, offsets = codepoints(text)
        values = ngram_repetition(cps, offsets, self.rep_len, top=True)
        return {self.stat_names[0]: with_nulls(values, text)}

    def keep(self, table):
        return in_range(self.stat(table, self.stat_names[0]), self.min_ratio, self.max_ratio)


@register
class word_repetition_filter(TokenizingFilter):
    """Keeps rows whose word n-gram repetition ratio (Data-Juicer's definition: the share of
    word n-grams that occur more than once in the text) is within [min_ratio, max_ratio].
    Words are lowercased and stripped of surrounding punctuation."""

    rep_len: int = param(10, ge=1, doc="n-gram length in words")
    min_ratio: float = param(0.0, ge=0, le=1, doc="lowest repetition ratio kept")
    max_ratio: float = param(0.5, ge=0, le=1, doc="highest repetition ratio kept")

    @property
    def stat_names(self):
        return (self.tokenized("word_rep_ratio" + _suffix(self.rep_len, 10)),)

    def text_stats(self, text):
        words = refined_words(self.words_text(text))
        values = ngram_repetition(words.ids, words.offsets, self.rep_len, top=False)
        return {self.stat_names[0]: with_nulls(values, text)}

    def keep(self, table):
        return in_range(self.stat(table, self.stat_names[0]), self.min_ratio, self.max_ratio)


def _word_list_stat(base: str, lang: str, directory: str, words: frozenset[str]) -> str:
    """Stat name for a ratio over a word list: the language and a custom list change it."""
    name = base + _suffix(lang, "en")
    if directory:
        name += "_" + hashlib.sha1("\n".join(sorted(words)).encode()).hexdigest()[:8]
    return name


def _listed_share(text: pa.Array, words: pa.Array, refined) -> pa.Array:
    """Share of each row's refined words that are in `words` (a large_string array)."""
    listed = pc.is_in(refined.vocab, value_set=words).to_numpy(zero_copy_only=False)
    hits = count_in(listed, refined.ids, refined.offsets)
    return with_nulls(ratio(hits, refined.counts), text)


def _augmented_share(text: pa.Array, words: frozenset[str], refined, group_sizes: list[int],
                     join_char: str) -> pa.Array:
    """As `_listed_share`, over each row's words plus Data-Juicer's word augmentation: every
    run of `g` consecutive words joined by `join_char`, for each g in `group_sizes` (for
    scripts without spaces between words). Per-row Python: runs are built as strings."""
    vocab = np.array(refined.vocab.to_pylist(), dtype=object)
    out = np.zeros(len(text), dtype=np.float64)
    for row in range(len(text)):
        row_words = vocab[refined.ids[refined.offsets[row]:refined.offsets[row + 1]]].tolist()
        every = row_words + [join_char.join(row_words[i:i + g]) for g in group_sizes
                             for i in range(len(row_words) - g + 1)]
        if every:
            out[row] = sum(w in words for w in every) / len(every)
    return with_nulls(out, text)


@dataclasses.dataclass(kw_only=True, repr=False)
class WordListFilter(TokenizingFilter):
    """A filter on the share of words found in a word list (`list_name`_<lang>.txt)."""

    lang: str = param("en", doc="language of the word list ('all' merges every list) and of the "
                                "default tokenizer model")
    use_words_aug: bool = param(False, doc="also count runs of consecutive words joined together "
                                           "(Data-Juicer's word augmentation, for Chinese)")
    words_aug_group_sizes: list[int] = param([2], doc="lengths of the runs of words joined")
    words_aug_join_char: str = param("", doc="text put between the words of a run")

    list_name = ""

    def setup(self):
        super().setup()
        if any(g < 1 for g in self.words_aug_group_sizes):
            raise ParamError(self.name, "words_aug_group_sizes", "each run length is at least 1")
        directory = getattr(self, self.list_name + "_dir")
        try:
            self.words = load_word_list(self.list_name, self.lang, directory)
        except (OSError, ValueError) as e:
            raise ParamError(self.name, "lang", str(e)) from None
        name = _word_list_stat(self.list_name + "_ratio", self.lang, directory, self.words)
        if self.use_words_aug:
            aug = ",".join(map(str, self.words_aug_group_sizes)) + self.words_aug_join_char
            name += "_aug" + hashlib.sha1(aug.encode()).hexdigest()[:6]
        self.stat_name = self.tokenized(name)
        self.word_array = pa.array(sorted(self.words), pa.large_string())

    @property
    def stat_names(self):
        return (self.stat_name,)

    def text_stats(self, text):
        refined = refined_words(self.words_text(text))
        if self.use_words_aug:
            return {self.stat_name: _augmented_share(text, self.words, refined, self.words_aug_group_sizes,
                                                     self.words_aug_join_char)}
        return {self.stat_name: _listed_share(text, self.word_array, refined)}


@register
class stopwords_filter(WordListFilter):
    """Keeps rows whose share of stopwords ('the', 'of', 'and', ...) is within
    [min_ratio, max_ratio]: natural prose has many, keyword lists and tables few."""

    min_ratio: float = param(0.3, ge=0, le=1, doc="lowest stopword ratio kept")
    max_ratio: float = param(1.0, ge=0, le=1, doc="highest stopword ratio kept")
    stopwords_dir: str = param("", doc="folder of stopwords_<lang>.txt lists (one word per "
                                       "line); empty uses the lists shipped with sluice")

    list_name = "stopwords"

    def keep(self, table):
        return in_range(self.stat(table, self.stat_name), self.min_ratio, self.max_ratio)


@register
class flagged_words_filter(WordListFilter):
    """Keeps rows whose share of flagged (obscene or adult) words is at most `max_ratio`."""

    max_ratio: float = param(0.045, ge=0, le=1, doc="highest flagged-word ratio kept")
    flagged_words_dir: str = param("", doc="folder of flagged_words_<lang>.txt lists (one word "
                                           "per line); empty uses the lists shipped with sluice")

    list_name = "flagged_words"

    def keep(self, table):
        return in_range(self.stat(table, self.stat_name), None, self.max_ratio)


# Python's str.splitlines boundaries; '\r\n' counts as one.
_LINE_BREAKS = np.zeros(0x110000, dtype=bool)
_LINE_BREAKS[[0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029]] = True


@numba.njit(cache=True, nogil=True)
def _line_stats(cps, offsets, breaks):
    rows = len(offsets) - 1
    lines = np.zeros(rows, dtype=np.int64)
    longest = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        i, end = offsets[r], offsets[r + 1]
        count = best = current = 0
        while i < end:
            if breaks[cps[i]]:
                count += 1
                best = max(best, current)
                current = 0
                if cps[i] == 0x0D and i + 1 < end and cps[i + 1] == 0x0A:
                    i += 1
            else:
                current += 1
            i += 1
        if current:  # a last line without a line break
            count += 1
            best = max(best, current)
        lines[r], longest[r] = count, best
    return lines, longest


@last_batch
def line_stats(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: number of lines as `str.splitlines` counts them (a trailing line break does
    not start an empty line), length in characters of the longest line (line breaks not
    counted), and length of the text in characters."""
    cps, offsets = codepoints(text)
    lines, longest = _line_stats(cps, offsets, _LINE_BREAKS)
    return lines, longest, np.diff(offsets)


@register
class average_line_length_filter(TextFilter):
    """Keeps rows whose average line length (characters / lines) is within [min_len, max_len]."""

    min_len: int = param(10, ge=0, doc="lowest average line length kept")
    max_len: int = param(sys.maxsize, ge=0, doc="highest average line length kept")

    stat_names = ("avg_line_length",)

    def text_stats(self, text):
        lines, _, lengths = line_stats(text)
        return {"avg_line_length": with_nulls(ratio(lengths, lines), text)}

    def keep(self, table):
        return in_range(self.stat(table, "avg_line_length"), float(self.min_len), float(self.max_len))


@register
class maximum_line_length_filter(TextFilter):
    """Keeps rows whose longest line (characters) is within [min_len, max_len]."""

    min_len: int = param(10, ge=0, doc="lowest maximum line length kept")
    max_len: int = param(sys.maxsize, ge=0, doc="highest maximum line length kept")

    stat_names = ("max_line_length",)

    def text_stats(self, text):
        return {"max_line_length": with_nulls(line_stats(text)[1], text)}

    def keep(self, table):
        return in_range(self.stat(table, "max_line_length"), self.min_len, self.max_len)


@register
class language_id_score_filter(TextFilter):
    """Keeps rows whose language, as identified with langid's model (97 languages, shipped
    inside the package), is in `lang` (any language when empty) with probability at least
    `min_score`. Text is lowercased and newlines become spaces first, as in Data-Juicer.
    The model loads once per worker process; scoring is vectorized (see `language.py`)."""

    lang: str | list[str] = param("", doc="language code(s) to keep, e.g. 'en' or ['en', 'de'];"
                                          " empty keeps any language")
    min_score: float = param(0.8, ge=0, le=1, doc="lowest language probability kept")

    stat_names = ("lang", "lang_score")

    def text_stats(self, text):
        lang, score = language_identifier().identify(text)
        return {"lang": lang, "lang_score": score}

    def keep(self, table):
        mask = in_range(self.stat(table, "lang_score"), self.min_score)
        langs = [self.lang] if isinstance(self.lang, str) else self.lang
        langs = [code for code in langs if code]
        if langs:
            mask = pc.and_(mask, pc.fill_null(pc.is_in(self.stat(table, "lang"),
                                                       value_set=pa.array(langs)), False))
        return mask


_WORD_BREAKS = re.compile("[ \n\t]")


@register
class perplexity_filter(TextFilter):
    """Keeps rows whose perplexity under a KenLM n-gram language model is within
    [min_ppl, max_ppl] (Data-Juicer's definition: the text's words, SentencePiece pieces with
    a tokenizer model, are scored line by line; perplexity is 10 ** -(log10 probability /
    (words + one end of sentence per line)), rounded to one decimal). The model is
    `model_path`, or Data-Juicer's file name <lang>.arpa.bin (or <lang>.arpa) in
    $SLUICE_MODELS; a recipe without one stops before reading anything. Per-row Python: the
    model scores one line at a time."""

    lang: str = param("en", doc="language of the text; names the default model files")
    min_ppl: float = param(0.0, ge=0, doc="lowest perplexity kept")
    max_ppl: float = param(1500.0, ge=0, doc="highest perplexity kept")
    model_path: str = param("", doc="KenLM model: an .arpa file, or a KenLM binary such as "
                                    "Data-Juicer's en.arpa.bin (needs the kenlm package)")
    tokenizer_model: str = param("", doc="SentencePiece model whose pieces are the words scored "
                                         "(Data-Juicer's <lang>.sp.model); empty: that file in "
                                         "$SLUICE_MODELS, else words split on whitespace")

    def setup(self):
        self.lm_path = (find_model(self.name, "model_path", self.model_path, f"{self.lang}.arpa.bin")
                        or find_model(self.name, "model_path", "", f"{self.lang}.arpa"))
        if self.lm_path is None:
            raise ParamError(self.name, "model_path", f"no KenLM model for '{self.lang}': set "
                             f"model_path: /path/to/{self.lang}.arpa.bin (Data-Juicer's model, or "
                             f"any .arpa file), or put {self.lang}.arpa.bin in {model_dir()} "
                             "($SLUICE_MODELS)")
        check_language_model(self.name, "model_path", self.lm_path)
        self.sp_model = find_model(self.name, "tokenizer_model", self.tokenizer_model,
                                   f"{self.lang}.sp.model")
        if self.sp_model is not None:
            check_sentencepiece(self.name, "tokenizer_model", self.sp_model)
        tag = model_tag(self.lm_path) + ("" if self.sp_model is None else model_tag(self.sp_model)[:4])
        self.stat_name = f"perplexity_{tag}"

    @property
    def stat_names(self):
        return (self.stat_name,)

    def notes(self):
        return () if self.sp_model is not None else (
            "no SentencePiece model (tokenizer_model, or <lang>.sp.model in $SLUICE_MODELS): "
            "perplexity was computed over words split on whitespace, not Data-Juicer's pieces",)

    def text_stats(self, text):
        model = language_model(str(self.lm_path))
        if self.sp_model is not None:
            sentences = pieces_text(text, self.sp_model).to_pylist()
        else:  # Data-Juicer's words without a tokenizer: split on ' ', '\n' and '\t'
            sentences = [None if t is None else " ".join(w for w in _WORD_BREAKS.split(t) if w)
                         for t in text.to_pylist()]
        values = [0.0 if t is None else perplexity(model, t) for t in sentences]
        return {self.stat_name: with_nulls(np.array(values, dtype=np.float64), text)}

    def keep(self, table):
        return in_range(self.stat(table, self.stat_name), self.min_ppl, self.max_ppl)


@register
class suffix_filter(Filter):
    """Keeps rows whose file suffix is one of `suffixes` (every row when the list is empty).
    A row's suffix comes from the field `suffix_key`: a suffix ('.py') or a file path, whose
    extension ('src/a.py' -> '.py') or, for a name without one, whose file name ('Dockerfile')
    is matched. (Data-Juicer reads code files one per row and takes their suffix; sluice reads
    rows from jsonl, parquet and csv, so the suffix is a field of the row.)"""

    suffixes: Union[str, list[str]] = param([], doc="suffixes kept, e.g. ['.py', '.md', 'Makefile']")
    suffix_key: str = param("suffix", doc="field holding each row's suffix or file path")

    stat_names = ()

    def setup(self):
        if isinstance(self.suffixes, str):
            self.suffixes = [self.suffixes]

    def keep(self, table):
        if not self.suffixes:
            return pa.array(np.ones(table.num_rows, dtype=bool))
        if self.suffix_key not in table.column_names:
            raise ParamError(self.name, "suffix_key", f"field '{self.suffix_key}' is not in the data; "
                             f"fields: {', '.join(table.column_names)}")
        value = table.column(self.suffix_key).cast(pa.string())
        wanted = pa.array(self.suffixes, pa.string())
        name = pc.replace_substring_regex(value, r"^.*/", "")
        extension = pc.replace_substring_regex(name, r"^[^.]*$|^.*?(\.[^.]*)$", r"\1")
        mask = pc.or_(pc.is_in(value, value_set=wanted), pc.is_in(extension, value_set=wanted))
        return pc.fill_null(pc.or_(mask, pc.is_in(name, value_set=wanted)), False)


@register
class field_expression_filter(Filter):
    """Keeps rows where a boolean expression over fields and stats holds, e.g.
    "stats.text_len > 100 and meta.lang == 'en'". Supports comparisons, and/or/not,
    + - * /, numbers, strings, `x is None`, `x in [...]`. Rows where it is null are dropped."""

    expression: str = param(doc="boolean expression over row fields and stats")

    stat_names = ()

    def setup(self):
        try:
            self.compiled = compile_expression(self.expression)
        except ValueError as e:
            raise ParamError(self.name, "expression", str(e)) from None

    def compute_stats(self, table):
        return {}

    def keep(self, table):
        try:
            return self.compiled.evaluate(table)
        except ValueError as e:
            raise ParamError(self.name, "expression", str(e)) from None
