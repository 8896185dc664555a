"""The leak check: no solution and no hidden test in anything students see.

One checker serves every place that publishes: ``course-check-release``
(:func:`check_release`: the student versions in ``labs/`` and the built book
in ``_build/html``), the student edition (:func:`course_grading.edition.make_edition`
checks every file it wrote, its execution cache included) and the tests.

A **secret line** (:func:`secret_lines`) is a stripped, non-empty line that
lies inside ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` or ``### BEGIN
HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` in a source notebook and appears
neither outside the markers of any source notebook (what students are shown
anyway) nor in :data:`PUBLIC_SOURCES`. There is no minimum length and comments
count: ``return 2 * x`` is as secret as a whole formula.

A file **leaks** (:func:`find_leaks`) when it holds a marker, when it is a
source notebook (an ``.ipynb`` below a folder named like the source folder),
or when any line a person or a tool could read from it is secret
(:func:`readable_lines`): its raw lines; the text of an HTML page as a browser
shows it (entities decoded, tags dropped, since syntax highlighting splits a
line of code into many ``<span>``); the cell sources *and outputs* of a
notebook, HTML outputs included (a notebook, or any JSON document, is read as
the text it holds rather than as JSON syntax, whose lines such as ``]`` are no
one's secret). Every file is read, whatever its suffix or size; only ``.git``
is skipped. Example::

    >>> secret = secret_lines(".")                              # doctest: +SKIP
    >>> find_leaks("_build/html", secret)                        # doctest: +SKIP
    [Leak(path='labs/lab02_attention/lab02_attention.html', what='scores = q @ k.transpose(-2, -1)')]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NamedTuple

from course_grading.cells import MARKER_PAIRS, MARKERS, cell_source
from course_grading.course import course_folder, find_root
from course_grading.manifest import is_instructor_only, is_junk

__all__ = ["PUBLIC_SOURCES", "Leak", "marked_lines", "secret_lines", "readable_lines", "find_leaks",
           "check_release"]

#: Files of the instructor repository written to be public, which students see
#: anyway: the package (``pip install`` gives its source), the book's sources
#: and the tests that go to students (instructor-only files excluded). A
#: solution line that also appears in one of them is not a secret of the labs
#: (``return out`` is everywhere; so is a helper that a lab re-implements and
#: the package or a test's reference implementation already holds). What is
#: derived from the source notebooks (``labs/``, the built book) is checked
#: against the rest.
PUBLIC_SOURCES: tuple[str, ...] = ("course_utils/**/*.py", "chapters/*.md", "tests/*.py")

#: What :func:`find_leaks` reports for a source notebook found among published files.
SOURCE_NOTEBOOK = "a source notebook (solutions and hidden tests) was published"


class Leak(NamedTuple):
    """One leak: the file (relative to the folder searched) and what it shows,
    a secret line, a marker or :data:`SOURCE_NOTEBOOK`."""

    path: str
    what: str

    def describe(self) -> str:
        """One line for a report, e.g. ``"labs/x.ipynb: contains '### BEGIN SOLUTION'"``."""
        if self.what in MARKERS:
            return f"{self.path}: contains {self.what!r}"
        if self.what == SOURCE_NOTEBOOK:
            return f"{self.path}: {self.what}"
        return f"{self.path}: solution or hidden-test line {self.what!r}"


def marked_lines(nb: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The stripped lines of a notebook inside its markers, and those outside.

    Example: a cell ``def f(x):``, ``### BEGIN SOLUTION``, ``return 2 * x``,
    ``### END SOLUTION`` gives ``({'return 2 * x'}, {'def f(x):'})``.
    """
    begins = {b for b, _ in MARKER_PAIRS}
    ends = {e for _, e in MARKER_PAIRS}
    secret: set[str] = set()
    public: set[str] = set()
    for cell in nb.get("cells", []):
        inside = False
        for line in cell_source(cell).splitlines():
            s = line.strip()
            if s in begins:
                inside = True
            elif s in ends:
                inside = False
            elif s:
                (secret if inside else public).add(s)
    return secret, public


def secret_lines(root: str | os.PathLike) -> set[str]:
    """The secret lines of the course at ``root`` (see the module's docstring).

    Returns an empty set when the course has no source folder.
    """
    root = Path(root)
    source = course_folder(root, "source")
    secret: set[str] = set()
    public: set[str] = set()
    if not source.is_dir():
        return secret
    for path in sorted(source.rglob("*.ipynb")):
        if ".ipynb_checkpoints" not in path.parts:
            inside, outside = marked_lines(json.loads(path.read_text(encoding="utf-8")))
            secret |= inside
            public |= outside
    for pattern in PUBLIC_SOURCES:
        for path in root.glob(pattern):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not is_instructor_only(rel) and not any(is_junk(p) for p in path.parts):
                public.update(line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines())
    return secret - public


class _Text(HTMLParser):
    """The text of an HTML page as a browser would show it (entities decoded, tags dropped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def _json_texts(node: Any, html: bool = False) -> Iterator[str]:
    """Every string a JSON document holds, a list of strings joined (that is how a
    notebook stores a cell's lines), and the text of HTML outputs (``text/html``)."""
    if isinstance(node, str):
        yield node
        if html:
            yield _html_text(node)
    elif isinstance(node, list) and node and all(isinstance(item, str) for item in node):
        yield from _json_texts("".join(node), html)
    elif isinstance(node, list):
        for item in node:
            yield from _json_texts(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _json_texts(value, html=key == "text/html")


def readable_lines(path: str | os.PathLike) -> set[str]:
    """Every stripped line a person or a tool could read from a file: its raw
    lines and the text of an HTML page; for a notebook (also one saved as
    ``.json`` or ``.txt``, as the book's ``_sources`` are) or any other JSON
    document, the text it holds, decoded (cell sources, outputs, HTML outputs
    as text), rather than its JSON syntax."""
    path = Path(path)
    return _readable(path.read_bytes().decode("utf-8", errors="replace"), path.suffix.lower())


def _readable(raw: str, suffix: str) -> set[str]:
    document = None
    if suffix in (".ipynb", ".json", ".txt"):
        try:
            document = json.loads(raw)
        except ValueError:
            pass
    texts = list(_json_texts(document)) if isinstance(document, (dict, list)) else [raw]
    if suffix in (".html", ".htm"):
        texts.append(_html_text(raw))
    return {s for text in texts for s in (line.strip() for line in text.splitlines()) if s}


def find_leaks(folder: str | os.PathLike, secret: set[str], source_name: str = "solutions") -> list[Leak]:
    """Every leak in the files at or below ``folder`` (hidden folders and ``_build``
    included, ``.git`` left out): markers, source notebooks (an ``.ipynb`` below a
    folder called ``source_name``) and lines in ``secret``. Sorted by file."""
    folder = Path(folder)
    leaks: list[Leak] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or ".git" in rel.parts:
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")
        leaks += [Leak(rel.as_posix(), marker) for marker in MARKERS if marker in raw]
        if path.suffix == ".ipynb" and source_name in rel.parts[:-1]:
            leaks.append(Leak(rel.as_posix(), SOURCE_NOTEBOOK))
        if secret:
            leaks += [Leak(rel.as_posix(), line) for line in sorted(_readable(raw, path.suffix.lower()) & secret)]
    return leaks


def check_release(root: str | os.PathLike | None = None) -> list[str]:
    """Leaks in what the course publishes: the student versions of the labs
    (the release folder, ``labs/``) and the built book (``_build/html``, if built).

    Returns one line per leak, e.g. ``"labs/lab02_attention/lab02_attention.ipynb:
    solution or hidden-test line 'scores = q @ k.transpose(-2, -1)'"``; empty
    when the release is clean.
    """
    root = find_root(root)
    secret = secret_lines(root)
    source = course_folder(root, "source").name
    findings = []
    for top in (course_folder(root, "release"), root / "_build" / "html"):
        if top.is_dir():
            prefix = top.relative_to(root).as_posix()
            findings += [f"{prefix}/{leak.describe()}" for leak in find_leaks(top, secret, source)]
    return findings
