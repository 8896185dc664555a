"""Chapters that run both in the book build and as plain notebooks: :func:`glue`.

The chapters quote numbers they compute in their prose: a code cell calls
``glue("ch1_ratio", ..., display=False)`` and the text quotes the value with
the role ``{glue:text}`` followed by the name in backticks. That is myst-nb's
*glue* mechanism, and it only means something while Jupyter Book builds the
book: the value is hidden in the cell's output, and the built page shows it
in the sentence. Opened as a plain notebook (JupyterLab, Colab, Kaggle,
VS Code), a chapter's prose shows the raw role, so the value must be visible
in the cell instead; and the chapter must not need the book's tools at all,
since Colab and a ``pip install course_utils`` do not bring them.

:func:`glue` does both:

- **in the book build** (see :func:`in_book_build`) it is myst-nb's ``glue``,
  called with the same arguments, so ``{glue:text}`` works and the built pages
  are exactly what ``from myst_nb import glue`` gave;
- **everywhere else**, even where myst-nb is installed, it shows the value in
  the cell's output as ``name: value`` (a figure, or anything else with a rich
  display such as a table, is displayed under a ``name:`` line).

How the build is recognised: by the environment variable
:data:`BOOK_BUILD_ENV` (``COURSE_UTILS_BOOK_BUILD=1``), which the kernels
that execute the chapters inherit from the build. The book sets it itself:
this module is also a Sphinx extension, listed in ``sphinx.extra_extensions``
of ``_config.yml``, and its :func:`setup` sets the variable in the build's
process before any notebook runs; so every ``jupyter-book build`` of this
book, whoever starts it, glues (the Makefile may set it too). A variable, not
a guess from what is installed or imported: a student's JupyterLab may well
have myst-nb installed, and a kernel cannot tell which program started it. A
value other than the usual spellings of on or off is an error rather than
silently one of the two.

Importing this module imports neither myst-nb nor IPython; each is imported
on the call that needs it.
"""

from __future__ import annotations

import os
from numbers import Number
from typing import Any

__all__ = ["BOOK_BUILD_ENV", "in_book_build", "glue", "show_source", "setup"]

#: The environment variable that marks a Jupyter Book build ("1": building the book).
BOOK_BUILD_ENV = "COURSE_UTILS_BOOK_BUILD"

_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})


def in_book_build() -> bool:
    """True while Jupyter Book executes the notebook (``COURSE_UTILS_BOOK_BUILD=1``).

    Unset, empty, ``0``, ``false``, ``no`` and ``off`` mean a plain notebook;
    ``1``, ``true``, ``yes`` and ``on`` (any case) the book build. Any other
    value raises ``ValueError``, so that a typo cannot quietly change what the
    book shows.
    """
    raw = os.environ.get(BOOK_BUILD_ENV, "")
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{BOOK_BUILD_ENV}={raw!r}: use 1 inside the book build, or leave it unset")


def glue(name: str, value: Any, display: bool = False) -> None:
    """Make ``value`` quotable with ``{glue:text}`` in the book; show it everywhere else.

    Args:
        name: the key the prose refers to, unique within the book.
        value: what to show; usually a formatted string, sometimes a number or a figure.
        display: in the book build, also show the value where the cell's output
            is (myst-nb's own ``display``); outside the book the value is always shown.

    In the book build this is ``myst_nb.glue(name, value, display)``, imported
    on first use (``ImportError`` with what to install when myst-nb is missing).
    """
    if in_book_build():
        try:
            from myst_nb import glue as myst_glue
        except ImportError as err:
            raise ImportError(f"{BOOK_BUILD_ENV} is set, so this is a book build, but myst-nb is not installed: "
                              "install the book tools (pip install -e '.[book]') or unset the variable") from err
        myst_glue(name, value, display)
        return
    _show(name, value)


def _show(name: str, value: Any) -> None:
    """Print ``name: value`` for text and numbers; display anything else under ``name:``."""
    if isinstance(value, (str, Number)):
        print(f"{name}: {value}")
        return
    try:
        from IPython.display import display as ipy_display
    except ImportError:  # plain Python without IPython: its repr is all there is
        print(f"{name}: {value!r}")
        return
    print(f"{name}:")
    ipy_display(value)


def show_source(obj: Any) -> Any:
    """The source code of a function, class or method of the package, for a chapter to display.

    Chapters that explain the package's code show it with this instead of
    retyping it, so book and package cannot drift apart: the text is read from
    the installed module with :func:`inspect.getsource`. Returns an
    ``IPython.display.Code`` (highlighted in the book and in Jupyter), or the
    plain source string where IPython is not installed.

    Example: ``show_source(Block)`` as a cell's last line shows ``class Block``.
    """
    import inspect

    if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj)):
        raise TypeError(f"show_source takes a class, function or method, got {type(obj).__name__}")
    source = inspect.getsource(obj)
    try:
        from IPython.display import Code
    except ImportError:
        return source
    return Code(source, language="python")


def setup(app: Any) -> dict[str, Any]:
    """Sphinx extension entry point: mark this process, and the kernels it starts, as the book build.

    Jupyter Book loads it from ``sphinx.extra_extensions`` in ``_config.yml``
    when the build starts, before myst-nb executes a notebook.
    """
    os.environ[BOOK_BUILD_ENV] = "1"
    return {"parallel_read_safe": True, "parallel_write_safe": True}
