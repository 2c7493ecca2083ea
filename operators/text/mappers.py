"""Built-in text mappers: cleaning and normalization, one batch at a time with Arrow kernels."""

from __future__ import annotations

import dataclasses
import html
import re
import sys
from typing import Optional

import ftfy
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.operators.base import STATS_PREFIX, Mapper, ParamError, param, register
from sluice.operators.text.byte_flags import (AMPERSAND, AT_SIGN, COLON, CONTROL, DIGIT_DOT, DOUBLE_SPACE,
                                              NON_ASCII, SLASH, SPACE_AT_BREAK, SPACE_AT_END, TAB_VT_FF, WW,
                                              change_rows_with, change_where)
from sluice.operators.text.sentences import without_repeated_sentences
from sluice.operators.text.words import free_marker, replace_column, special_characters, text_array


@dataclasses.dataclass(kw_only=True, repr=False)
class TextMapper(Mapper):
    """A mapper that rewrites one text field; null texts stay null."""

    text_key: str = param("text", doc="field holding the text")

    def process(self, table: pa.Table) -> pa.Table:
        return replace_column(table, self.text_key, self.transform(text_array(self, table)))

    def transform(self, text: pa.Array) -> pa.Array:
        raise NotImplementedError


def _apply_where(text: pa.Array, pattern: str, change) -> pa.Array:
    """Apply `change` (Array -> Array) only to the rows matching regex `pattern`."""
    mask = pc.fill_null(pc.match_substring_regex(text, pattern), False)
    return change_where(text, mask.to_numpy(zero_copy_only=False), change)


def _join_pieces(pieces: pa.ListArray, keep: np.ndarray, text: pa.Array) -> pa.Array:
    """Concatenate the kept pieces of each row back into one string (null rows stay null)."""
    parents = pc.list_parent_indices(pieces).to_numpy()
    counts = np.bincount(parents[keep], minlength=len(text))
    offsets = np.zeros(len(text) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    mask = text.is_null() if text.null_count else None
    kept = pc.filter(pieces.flatten(), pa.array(keep))
    lists = pa.ListArray.from_arrays(pa.array(offsets), kept, mask=mask)
    return pc.binary_join(lists, pa.scalar("", kept.type)).cast(text.type)  # kept: string or large_string


# Horizontal whitespace other than ' ': tabs, no-break, ideographic, en/em and other spaces.
_OTHER_SPACES = "\t\x0b\x0c\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"


def _collapse_spaces(text: pa.Array) -> pa.Array:
    """Each run of horizontal whitespace becomes one ' '. Only runs other than a single ' '
    match, so most spaces are left untouched (several times faster than matching them all)."""
    return pc.replace_substring_regex(text, f"(?: ?[{_OTHER_SPACES}]|  )[ {_OTHER_SPACES}]*", " ")


@register
class whitespace_normalization_mapper(TextMapper):
    """Changes every Unicode space (no-break, ideographic, en/em spaces, tabs, ...) to ' ',
    drops zero-width spaces and byte-order marks, collapses runs of spaces into one, removes
    spaces at line ends and strips the text. Newlines are kept."""

    def transform(self, text):
        def normalize(rows):
            rows = pc.replace_substring_regex(rows, "[\u200b\u2060\ufeff]", "")
            rows = _collapse_spaces(rows)
            rows = pc.replace_substring_regex(rows, " ?\n ?", "\n")
            return pc.utf8_trim_whitespace(rows)

        return change_rows_with(text, NON_ASCII | TAB_VT_FF | DOUBLE_SPACE | SPACE_AT_BREAK | SPACE_AT_END,
                                normalize)


@register
class fix_unicode_mapper(TextMapper):
    """Repairs mojibake and broken Unicode with ftfy (e.g. 'Ã©' -> 'é', HTML entities outside
    markup, curly-quote and ligature fixes, CRLF line breaks), then applies the Unicode
    normalization form `normalization` (NFKC also folds full-width forms).

    ftfy is per-row Python, so it only sees rows that hold something it could change:
    rows of printable ASCII without '&' (most English text) are left as they are."""

    normalization: str = param("NFC", doc="Unicode normalization form applied after fixing",
                               choices=("NFC", "NFKC", "NFD", "NFKD"))

    def transform(self, text):
        def fix(rows):
            return pa.array([ftfy.fix_text(t, normalization=self.normalization)
                             for t in rows.to_pylist()], type=text.type)

        return change_rows_with(text, NON_ASCII | CONTROL | AMPERSAND, fix)


# Unicode punctuation and its ASCII counterpart (the map Data-Juicer uses, without its
# mapping of the full-width digit one to a quote).
PUNCTUATION_TO_ASCII = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"',
    "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?",
    "！": "!", "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~",
    "’": "'", "…": "...", "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%",
    "►": "-",
}


@register
class punctuation_normalization_mapper(TextMapper):
    """Changes Unicode punctuation to ASCII: full-width and CJK commas, stops, brackets and
    colons, curly and angle quotes, dashes ('—' -> ' - '), ellipsis ('…' -> '...')."""

    def transform(self, text):
        def normalize(rows):
            for source, target in PUNCTUATION_TO_ASCII.items():
                rows = pc.replace_substring(rows, source, target)
            return rows

        return change_rows_with(text, NON_ASCII, normalize)


@dataclasses.dataclass(kw_only=True, repr=False)
class RegexCleanMapper(TextMapper):
    """Replaces every match of a regular expression (RE2 syntax) with `repl`."""

    pattern: Optional[str] = param(None, doc="regular expression (RE2 syntax) to remove; "
                                             "null uses the built-in pattern")
    repl: str = param("", doc="replacement for each match")

    default_pattern = ""
    # The bytes every match of the default pattern holds one of (see `byte_flags`): the rows
    # without any are left as they are.
    default_needs = 0

    def setup(self):
        if self.pattern is None:
            self.pattern = self.default_pattern
        try:
            pc.replace_substring_regex(pa.array([""]), self.pattern, self.repl)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ParamError(self.name, "pattern", f"invalid regular expression: {e}") from None

    def transform(self, text):
        def replace(rows):
            return pc.replace_substring_regex(rows, self.pattern, self.repl)

        if self.pattern == self.default_pattern and self.default_needs:
            return change_rows_with(text, self.default_needs, replace)
        return replace(text)


@register
class clean_email_mapper(RegexCleanMapper):
    """Removes e-mail addresses (or replaces them with `repl`)."""

    default_pattern = r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}"
    default_needs = AT_SIGN


@register
class clean_links_mapper(RegexCleanMapper):
    """Removes links: URLs with a scheme (http, https, ftp, ...), 'www.' addresses and bare
    domains followed by a path. Trailing sentence punctuation stays in the text."""

    default_pattern = (r"(?i)\b(?:[a-z][a-z0-9+.\-]*://|www\d{0,3}\.|[a-z0-9.\-]+\.[a-z]{2,6}/)"
                       r"[^\s<>\"'`]*[^\s<>\"'`.,;:!?()\[\]{}«»“”‘’]")
    default_needs = SLASH | WW  # '://' or a path, or 'www' ('w' has no other case fold)


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"


@register
class clean_ip_mapper(RegexCleanMapper):
    """Removes IP addresses: IPv4 dotted quads (each part 0-255) and full IPv6 addresses
    (eight groups of hex digits)."""

    default_pattern = (rf"\b(?:{_OCTET}\.){{3}}{_OCTET}\b"
                       r"|\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b")
    default_needs = DIGIT_DOT | COLON


# A tag, a comment, a doctype or processing instruction: what makes a row HTML.
_MARKUP = r"</?[A-Za-z][^>]*>|<![^>]*>|<\?[^>]*>"


def _tidy_markup(text: str, marker: str) -> str:
    """`text` with `marker` where markup was: whitespace runs that touch markup become one
    newline if they hold one, else lose only the markers; at the text's ends they go."""
    m = re.escape(marker)
    text = re.sub(rf"^[\s{m}]*{m}[\s{m}]*|[\s{m}]*{m}[\s{m}]*$", "", text)
    return re.sub(rf"[\s{m}]*{m}[\s{m}]*",
                  lambda run: "\n" if "\n" in run.group() else run.group().replace(marker, ""), text)


@register
class clean_html_mapper(TextMapper):
    """Turns HTML into its text, as Data-Juicer does (its parser's text of the document):
    removes tags, comments and doctypes, unescapes entities ('&amp;' -> '&'), and starts a
    '*' line at each '<li>' and '<ol>'. The text between tags is kept as it is; whitespace that
    touches markup (the indentation and line breaks of the markup) becomes one line break,
    or goes where it held none, and the text's leading and trailing markup whitespace goes.
    Unlike Data-Juicer, the contents of script and style elements are dropped (Data-Juicer
    keeps the code as text). A row without markup is left as it is. Per-row Python for the
    rows with markup."""

    def transform(self, text):
        def clean(rows):
            marker = free_marker(rows)
            rows = pc.replace_substring_regex(
                rows, r"(?is)<!--.*?-->|<script\b.*?</script\s*>|<style\b.*?</style\s*>", marker)
            for tag, replacement in (("<li>", "\n*"), ("</li>", ""), ("<ol>", "\n*"), ("</ol>", "")):
                rows = pc.replace_substring(rows, tag, replacement)
            rows = pc.replace_substring_regex(rows, _MARKUP, marker)
            return pa.array([None if t is None else html.unescape(_tidy_markup(t, marker))
                             for t in rows.to_pylist()], type=rows.type)

        return _apply_where(text, _MARKUP + r"|<!--", clean)


@register
class remove_repeat_sentences_mapper(TextMapper):
    """Removes every sentence that already appeared earlier in the same text, keeping the
    first. Sentences end at '.', '!', '?', '…' and their full-width forms (with any closing
    quotes) or at a line end; line breaks are kept. Sentences shorter than
    `min_repeat_sentence_length` are never removed."""

    lowercase: bool = param(False, doc="compare sentences case-insensitively")
    ignore_special_character: bool = param(
        True, doc="compare sentences on letters, digits, CJK characters and spaces only")
    min_repeat_sentence_length: int = param(
        2, ge=0, doc="sentences shorter than this (after the options above) are always kept")

    def transform(self, text):
        return without_repeated_sentences(text, self.lowercase, self.ignore_special_character,
                                          self.min_repeat_sentence_length)


@dataclasses.dataclass(kw_only=True, repr=False)
class WordRemovalMapper(TextMapper):
    """Removes the words (split on spaces, tabs and newlines) that `_removable` marks. In a
    text that loses words, the rest is rejoined as Data-Juicer does: one space between words,
    one tab or newline where the removed stretch held one, no empty lines, no leading or
    trailing blanks. Texts with no word to remove are left as they are."""

    def _removable(self, words: pa.Array) -> np.ndarray:
        """Boolean mask over `words` (a flat string array): the words to remove."""
        raise NotImplementedError

    def transform(self, text):
        spaced = pc.replace_substring(pc.replace_substring(text, "\n", " "), "\t", " ")
        words = pc.split_pattern(spaced, " ")
        parents = pc.list_parent_indices(words).to_numpy()
        affected = np.zeros(len(text), dtype=bool)
        affected[parents[self._removable(words.flatten())]] = True
        if not affected.any():
            return text
        return pc.replace_with_mask(text, pa.array(affected),
                                    self._remove_words(pc.filter(text, pa.array(affected))))

    def _remove_words(self, text: pa.Array) -> pa.Array:
        marker = free_marker(text)
        pieces = pc.split_pattern(
            pc.replace_substring_regex(text, "([ \t\n]+)", marker + r"\1" + marker), marker)
        flat = pieces.flatten()
        offsets = pieces.offsets.to_numpy()
        parents = pc.list_parent_indices(pieces).to_numpy()
        # Pieces alternate word, separator, word, ... in every row.
        is_word = (np.arange(len(flat)) - (offsets[parents] - offsets[0])) % 2 == 0
        joined = _join_pieces(pieces, ~(is_word & self._removable(flat)), text)
        joined = pc.replace_substring_regex(joined, "[ \t\n]*\n[ \t\n]*", "\n")
        joined = pc.replace_substring_regex(joined, "[ \t]*\t[ \t]*", "\t")
        joined = pc.replace_substring_regex(joined, " +", " ")
        return pc.utf8_trim(joined, characters=" \t\n")


@register
class remove_long_words_mapper(WordRemovalMapper):
    """Removes words (split on spaces, tabs and newlines) whose length is outside
    [min_len, max_len], unless stripping leading and trailing punctuation brings it inside.
    In a text that loses words, the rest is rejoined as Data-Juicer does: one space between
    words, one tab or newline where the removed stretch held one, no empty lines, no leading
    or trailing blanks. Texts with no word to remove are left as they are."""

    min_len: int = param(1, ge=0, doc="shortest word kept, in characters")
    max_len: int = param(sys.maxsize, ge=0, doc="longest word kept, in characters")

    def _fits(self, words: pa.Array) -> np.ndarray:
        lengths = pc.utf8_length(words).to_numpy(zero_copy_only=False)
        return (lengths >= self.min_len) & (lengths <= self.max_len)

    def _removable(self, words: pa.Array) -> np.ndarray:
        """Words to remove: out of range, and still out of range once stripped."""
        out = ~self._fits(words) & pc.greater(pc.binary_length(words), 0).to_numpy(
            zero_copy_only=False)
        stripped = pc.utf8_trim(pc.filter(words, pa.array(out)), characters=special_characters())
        out[out] = ~self._fits(stripped)
        return out


@register
class remove_words_with_incorrect_substrings_mapper(WordRemovalMapper):
    """Removes words (split on spaces, tabs and newlines) that, stripped of leading and
    trailing punctuation and symbols, contain one of `substrings` (by default pieces of links:
    'http', 'www', '.com', 'href', '//'). The rest is rejoined as remove_long_words_mapper
    does; texts with no word to remove are left as they are."""

    lang: str = param("en", doc="language of the text (accepted for Data-Juicer recipes)")
    tokenization: bool = param(False, choices=(False,),
                               doc="Data-Juicer's tokenized mode (joins pieces without spaces) "
                                   "is not offered: words are split on whitespace")
    substrings: Optional[list[str]] = param(None, doc="substrings that mark a word for removal; "
                                                      "null: http, www, .com, href, //")

    def setup(self):
        if self.substrings is None:
            self.substrings = ["http", "www", ".com", "href", "//"]

    def _removable(self, words: pa.Array) -> np.ndarray:
        out = np.zeros(len(words), dtype=bool)
        if not self.substrings:
            return out
        stripped = pc.utf8_trim(words, characters=special_characters())
        for piece in self.substrings:
            out |= pc.fill_null(pc.match_substring(stripped, piece), False).to_numpy(zero_copy_only=False)
        return out


# A C-style block comment, as Data-Juicer (after RedPajama) matches it.
_BLOCK_COMMENT = re.compile(r"/\*[^*]*\*+(?:[^/*][^*]*\*+)*/")
_COPYRIGHT = re.compile("copyright", re.IGNORECASE)


def _without_copyright(text: str) -> str:
    found = _BLOCK_COMMENT.search(text)
    if found:
        if _COPYRIGHT.search(found.group(0)):
            text = text[:found.start()] + text[found.end():]
        return text
    lines = text.split("\n")
    skip = 0
    while skip < len(lines) and (not lines[skip] or lines[skip].startswith(("//", "#", "--"))):
        skip += 1
    return "\n".join(lines[skip:]) if skip else text


def per_row(text: pa.Array, change) -> pa.Array:
    """`change` (str -> str) applied to each row in Python; null rows stay null."""
    return pa.array([None if t is None else change(t) for t in text.to_pylist()], type=text.type)


@register
class clean_copyright_mapper(TextMapper):
    """Removes a copyright notice from code: the first /* ... */ block comment when it holds
    the word 'copyright' (any case); in a text with no block comment, the leading lines that
    are empty or start with '//', '#' or '--'. Data-Juicer's rule (from RedPajama). Per-row
    Python, only for rows holding a block comment or starting with such a line."""

    def transform(self, text):
        return _apply_where(text, r"(?s)/\*.*\*/|^(?://|#|--|\n)|^$",
                            lambda rows: per_row(rows, _without_copyright))


def _internal(column: str) -> bool:
    return column.startswith("__") or column.startswith(STATS_PREFIX)


def _check_fields(op, param_name: str, wanted, table: pa.Table) -> None:
    missing = [f for f in wanted if f not in table.column_names]
    if missing:
        raise ParamError(op.name, param_name, f"field(s) {', '.join(map(repr, missing))} not in "
                         f"the data; fields: {', '.join(table.column_names)}")


@register
class rename_fields_mapper(Mapper):
    """Renames fields: `mapping` maps each old name to its new name. Other fields are kept."""

    mapping: dict[str, str] = param(doc="old field name -> new field name")

    def setup(self):
        targets = list(self.mapping.values())
        if len(set(targets)) != len(targets):
            raise ParamError(self.name, "mapping", "two fields are renamed to the same name")

    def process(self, table):
        _check_fields(self, "mapping", self.mapping, table)
        names = [self.mapping.get(c, c) for c in table.column_names]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ParamError(self.name, "mapping", f"renaming would give two fields named {clash[0]!r}")
        return table.rename_columns(names)


@register
class select_fields_mapper(Mapper):
    """Keeps only the fields listed in `fields` (in that order) and drops the others.
    Internal columns (starting with '__', and 'stats.*') are always kept."""

    fields: list[str] = param(doc="names of the fields to keep")

    def process(self, table):
        _check_fields(self, "fields", self.fields, table)
        internal = [c for c in table.column_names if _internal(c) and c not in self.fields]
        return table.select(list(self.fields) + internal)
