"""From reST-like plain text (Python's help topics and docstrings) to clean English paragraphs.

Cleaning keeps paragraphs of prose: headings, literal blocks (indented after
a line ending with ":"), grammar rules, tables, doctest lines and
symbol-heavy paragraphs are dropped; reST emphasis is removed, typographic
quotes become ASCII, whitespace is collapsed. The entry point is
:func:`prose_paragraphs`: one text in, its prose paragraphs out, in order.
"""

from __future__ import annotations

import re

__all__ = ["prose_paragraphs"]


_UNDERLINE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")
_BULLET = re.compile(r"^(\s*)([*\-\u2022]|\d+\.|\(\d+\)|[a-z]\.)\s+")
_CODE_LINE = re.compile(
    r">>>|::=|^\s*\.\.\.|^\s*[|+][-=+|]|-{3,}|^\s*#|^\s*@\w"
    r"|^\s*[\w.]+\(.*\)\s*(->.*)?$"  # a bare call signature: name(args) -> result
    r"|^\s*[\w.\[\](), ]+\s=\s"  # an assignment: x = ...
    r"|^\s*(def|class|import|from|return|if|for|while|with|try|except)\b.*[:;(=]\s*$"
)
_LETTER = re.compile(r"[^\W\d_]")
_EMPHASIS = re.compile(r'(?<![\w"*])\*\*?(\w[^*"]*?)\*\*?(?![\w"*])')  # *emphasis*, **strong**
_ROLE = re.compile(r":[a-z:]+:`~?([^`]+)`")  # :role:`target`
_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`_?")  # ``literal``, `title`, `link`_
_FOOTNOTE = re.compile(r"\s\[\d+\]")  # footnote references " [1]"
_FIELD = re.compile(r"(?<!\S):(?:param|type|returns?|rtype|raises?|arg|key|keyword|ivar|var)\b[^:]*:\s*")  # :param x:
_HYPHEN_BREAK = re.compile(r"(?<=[A-Za-z]-) ")  # joining "quote-" and "delimited" lines leaves a space
_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": " - ",
                        "\u2026": "...", "\u00a0": " "})


def _blocks(text: str) -> list[list[str]]:
    """Split text into blank-line separated blocks of lines: ``"a\\n\\nb"`` -> ``[["a"], ["b"]]``."""
    blocks, block = [], []
    for line in text.expandtabs(8).splitlines():
        if line.strip():
            block.append(line.rstrip())
        elif block:
            blocks.append(block)
            block = []
    if block:
        blocks.append(block)
    return blocks


def _letter_ratio(text: str) -> float:
    """Share of letters among non-space characters: ``"ab+1"`` -> 0.5."""
    n_chars = len(text) - sum(text.count(c) for c in " \t\n")
    return len(_LETTER.findall(text)) / max(1, n_chars)


def _clean_inline(text: str) -> str:
    """Remove inline markup: ``'*field_name* and ``x``'`` -> ``'field_name and x'``."""
    text = text.translate(_ASCII)
    text = _EMPHASIS.sub(r"\1", text)
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(lambda m: m.group(1) or m.group(2), text)
    text = _FOOTNOTE.sub("", text)
    text = _FIELD.sub("", text)
    return " ".join(text.split())


def prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a reST-like plain text, cleaned, in order."""
    out: list[str] = []
    body_indent, prev_colon, code_indent = 0, False, None
    for block in _blocks(text):
        indent = min(len(line) - len(line.lstrip(" ")) for line in block)
        if len(block) >= 2 and _UNDERLINE.match(block[-1]):  # a heading
            body_indent, prev_colon, code_indent = 0, False, None
            continue
        if code_indent is not None and indent >= code_indent:  # literal block goes on
            continue
        code_indent = None
        if prev_colon and indent > body_indent:  # "...as follows:" then an indented block
            code_indent = indent
            continue
        bullet = _BULLET.match(block[0])
        lines = [block[0][bullet.end():] if bullet else block[0]] + block[1:]
        body_indent = bullet.end() if bullet else indent
        joined = _HYPHEN_BREAK.sub("", " ".join(line.strip() for line in lines))
        prev_colon = joined.endswith(":")
        if any(_CODE_LINE.search(line) for line in lines):
            continue
        para = _clean_inline(joined)
        if len(para.split()) >= 6 and _letter_ratio(para) >= 0.78 and para[-1] in '.:?!)"':
            out.append(para)
    return out

