"""Which line of a jinja2 template each line of its rendered text comes from, so that an error
found in the rendered text (invalid YAML, a bad key) can name the line of the file the user
wrote, even after a loop, a multi-line comment or tag, or a block left out changed the lines.

Every newline in the template's literal text gets a mark naming its source line just before
it; jinja2 copies literal text as it is, so after rendering each line ends with the mark of the
template line it ended on. The marks are then taken out.
"""

from __future__ import annotations

import re

import jinja2

_MARK = re.compile("\x00(\\d+)\x00")


def mark_lines(env: jinja2.Environment, source: str) -> str:
    """`source` with a mark before each newline of its literal text (not inside tags)."""
    parts = []
    for lineno, token, value in env.lexer.tokeniter(source, None):
        if token == "data":
            pieces = value.split("\n")
            value = "\n".join(piece + (f"\x00{lineno + i}\x00" if i < len(pieces) - 1 else "")
                              for i, piece in enumerate(pieces))
        parts.append(value)
    return "".join(parts)


def take_marks(rendered: str) -> tuple[str, list[int]]:
    """(rendered text without marks, template line of each of its lines, 1-based). A line
    without a mark (text a tag wrote, or the last line) counts as the line after the one
    before it."""
    lines, sources, previous = [], [], 0
    for line in rendered.split("\n"):
        marks = _MARK.findall(line)
        previous = int(marks[-1]) if marks else previous + 1
        lines.append(_MARK.sub("", line))
        sources.append(previous)
    return "\n".join(lines), sources


def render_with_lines(env: jinja2.Environment, source: str, context: dict) -> tuple[str, list[int]]:
    """Render `source` (syntax errors name its own lines) and say where each line came from."""
    env.parse(source)
    return take_marks(env.from_string(mark_lines(env, source)).render(**context))
