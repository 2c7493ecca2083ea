"""Mappers for LaTeX sources (arXiv papers), after Data-Juicer's, which follow RedPajama's
arXiv cleaner. Each leaves a text that holds no backslash (or no '%', for comments) as it is;
those that need Python's regular expressions (lazy matches before a header, patterns built
from each document's macros) run per row, only on the rows that could change."""

from __future__ import annotations

import re
from typing import Union

import pyarrow.compute as pc

from sluice.operators.base import param, register
from sluice.operators.text.mappers import TextMapper, _apply_where, per_row

_SECTION = r"\*?(?:\[(.*?)\])?\{(.*?)\}"
# Data-Juicer's pattern, kept as it is: no '|' between paragraph and subparagraph, so those two
# count as a header only together.
_HEADER = re.compile(
    r"^(.*?)("
    + "|".join(rf"\\\b{kind}\b{_SECTION}" for kind in ("chapter", "part", "section", "subsection",
                                                       "subsubsection"))
    + rf"|\\\bparagraph\b{_SECTION}\\\bsubparagraph\b{_SECTION})",
    re.DOTALL)


@register
class remove_header_mapper(TextMapper):
    """Removes everything before the first \\chapter, \\part, \\section, \\subsection or
    \\subsubsection (with optional '*' and [short title]) of a LaTeX document: the preamble,
    title and abstract. A text without such a header becomes empty when `drop_no_head` is true
    (a text_length_filter after it then drops the row); Data-Juicer's own code leaves that
    text unchanged despite the parameter."""

    drop_no_head: bool = param(True, doc="empty the texts that have no header")

    def transform(self, text):
        def strip_preamble(value: str) -> str:
            if not _HEADER.search(value):
                return "" if self.drop_no_head else value
            return _HEADER.sub(r"\2", value)

        if self.drop_no_head:
            return per_row(text, strip_preamble)
        return _apply_where(text, r"\\", lambda rows: per_row(rows, strip_preamble))


_INLINE_COMMENT = re.compile(r"[^\\]%.+$", re.MULTILINE)
_LINE_COMMENT = re.compile(r"^%.*\n?", re.MULTILINE)


@register
class remove_comments_mapper(TextMapper):
    """Removes TeX comments: with `inline`, from a '%' not preceded by a backslash to the end
    of its line, together with the character before the '%' (Data-Juicer's pattern
    `[^\\\\]%.+$`); with `multiline`, every line that starts with '%'."""

    doc_type: Union[str, list[str]] = param("tex", doc="document type(s); every text is treated "
                                                       "as TeX, as in Data-Juicer")
    inline: bool = param(True, doc="remove comments that follow text on a line")
    multiline: bool = param(True, doc="remove lines that start with '%'")

    def transform(self, text):
        def uncomment(value: str) -> str:
            if self.inline:
                value = _INLINE_COMMENT.sub("", value)
            if self.multiline:
                value = _LINE_COMMENT.sub("", value)
            return value

        return _apply_where(text, "%", lambda rows: per_row(rows, uncomment))


@register
class remove_bibliography_mapper(TextMapper):
    """Removes the end of a LaTeX document from the first \\appendix,
    \\begin{references}, \\begin{REFERENCES}, \\begin{thebibliography} or \\bibliography{...}
    on: the bibliography and appendices."""

    def transform(self, text):
        return pc.replace_substring_regex(
            text, r"(?s)(?:\\appendix|\\begin\{references\}|\\begin\{REFERENCES\}|"
                  r"\\begin\{thebibliography\}|\\bibliography\{.*\}).*$", "")


_NEWCOMMAND = re.compile(r"\\\bnewcommand\b\*?\{(\\[a-zA-Z0-9]+?)\}\{(.*?)\}$", re.MULTILINE)
_DEF = re.compile(r"\\def\s*(\\[a-zA-Z0-9]+?)\s*\{(.*?)\}$", re.MULTILINE)


def _expand_macros(text: str) -> str:
    macros: dict[str, str] = {}
    for definitions in (_NEWCOMMAND, _DEF):
        for found in definitions.finditer(text):
            macros[found.group(1)] = found.group(2)
    for name, value in macros.items():
        text = re.sub("(" + re.escape(name) + ")([^a-zA-Z0-9])", lambda m, v=value: v + m.group(2), text)
    return text


@register
class expand_macro_mapper(TextMapper):
    """Expands the LaTeX macros without arguments that a document defines with
    \\newcommand{\\name}{value} or \\def\\name{value} (the definition on one line): each use of
    \\name not followed by a letter or digit becomes its value, in the definitions too, as in
    Data-Juicer. Macros with arguments are left as they are. Values are inserted as written
    (Data-Juicer fails on a value holding a non-ASCII character)."""

    def transform(self, text):
        return _apply_where(text, r"\\newcommand|\\def", lambda rows: per_row(rows, _expand_macros))
