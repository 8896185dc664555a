"""course_utils.notebook.glue: myst-nb's glue in the book build, a visible value everywhere else.

- importing the module imports neither myst-nb nor IPython;
- outside the book (variable unset or off) it prints ``name: value`` and
  never touches myst-nb, even one that is installed (a fake here, that fails if called);
- in the book build (``COURSE_UTILS_BOOK_BUILD=1``) it hands its arguments to
  myst-nb's glue unchanged (a fake that records them), and what it displays is
  byte for byte what the real ``myst_nb.glue`` displays;
- a misspelt value of the variable, or a book build without myst-nb, is an error;
- the book marks its own build: ``_config.yml`` loads the module as a Sphinx
  extension, whose ``setup`` sets the variable (a build without it fails
  strictly: every ``{glue:text}`` key would be missing);
- end to end, in a real kernel: the variable reaches the kernel, and the cell's
  output is a glue record in the book build and ``name: value`` text outside it.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from course_utils import notebook
from course_utils.notebook import BOOK_BUILD_ENV, glue, in_book_build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_myst_nb(monkeypatch):
    """A stand-in ``myst_nb`` module whose ``glue`` records its calls."""
    calls: list[tuple] = []
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, variable, display=True: calls.append((name, variable, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    return calls


@pytest.fixture
def outside(monkeypatch):
    monkeypatch.delenv(BOOK_BUILD_ENV, raising=False)


@pytest.fixture
def inside(monkeypatch):
    monkeypatch.setenv(BOOK_BUILD_ENV, "1")


def test_import_pulls_in_no_book_tool():
    code = ("import sys, course_utils.notebook; "
            "bad = [m for m in ('myst_nb', 'IPython', 'sphinx', 'jupyter_book') if m in sys.modules]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_listed_in_the_package():
    import course_utils

    assert "notebook" in course_utils.__all__ and course_utils.notebook is notebook


@pytest.mark.parametrize("value", ["", "0", "false", "No", " off "])
def test_off_values(monkeypatch, value):
    monkeypatch.setenv(BOOK_BUILD_ENV, value)
    assert not in_book_build()


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_on_values(monkeypatch, value):
    monkeypatch.setenv(BOOK_BUILD_ENV, value)
    assert in_book_build()


def test_unset_is_off(outside):
    assert not in_book_build()


def test_the_sphinx_extension_marks_the_build(monkeypatch):
    monkeypatch.setenv(BOOK_BUILD_ENV, "0")  # so that monkeypatch restores what was there after setup() sets it
    assert not in_book_build()
    assert notebook.setup(object()) == {"parallel_read_safe": True, "parallel_write_safe": True}
    assert in_book_build()


def test_the_book_loads_the_extension():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "course_utils.notebook" in config["sphinx"]["extra_extensions"], (
        "_config.yml must list course_utils.notebook in sphinx.extra_extensions, or the chapters print their glue values")


@pytest.mark.parametrize("value", ["2", "book", "ture"])
def test_a_misspelt_value_is_an_error(monkeypatch, value, fake_myst_nb):
    monkeypatch.setenv(BOOK_BUILD_ENV, value)
    with pytest.raises(ValueError, match=BOOK_BUILD_ENV):
        glue("x", "1", display=False)
    assert not fake_myst_nb


def test_outside_the_book_the_value_is_printed(outside, fake_myst_nb, capsys):
    glue("ch1_ratio", "1,234", display=False)
    glue("ch1_block", 64, display=False)
    glue("ch1_p", 0.25)
    assert capsys.readouterr().out == "ch1_ratio: 1,234\nch1_block: 64\nch1_p: 0.25\n"
    assert not fake_myst_nb, "myst-nb's glue was called outside the book build"


def test_outside_the_book_a_figure_is_displayed(outside, fake_myst_nb, capsys, monkeypatch):
    import IPython.display
    from matplotlib.figure import Figure

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    fig = Figure()
    glue("ch6_fig", fig, display=False)
    assert shown == [fig]
    assert capsys.readouterr().out == "ch6_fig:\n"
    assert not fake_myst_nb


def test_in_the_book_build_myst_nb_gets_the_same_arguments(inside, fake_myst_nb, capsys):
    glue("ch1_ratio", "1,234", display=False)
    glue("ch1_shown", 3, display=True)
    glue("ch1_default", "x")
    assert fake_myst_nb == [("ch1_ratio", "1,234", False), ("ch1_shown", 3, True), ("ch1_default", "x", False)]
    assert capsys.readouterr().out == ""


def test_a_book_build_without_myst_nb_says_what_to_install(inside, monkeypatch):
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # makes `import myst_nb` fail
    with pytest.raises(ImportError, match=r"\[book\]"):
        glue("x", "1", display=False)


@pytest.mark.parametrize("display", [False, True])
def test_in_the_book_build_the_output_is_myst_nbs_own(inside, monkeypatch, display):
    """What the real myst-nb glue displays (the record ``{glue:text}`` reads) is unchanged."""
    myst_nb = pytest.importorskip("myst_nb")
    import IPython.display
    import myst_nb.ext.glue as myst_glue_module

    def record(into):
        return lambda *objs, **kw: into.append((objs, kw))

    ours, theirs = [], []
    monkeypatch.setattr(myst_glue_module, "ipy_display", record(ours))
    monkeypatch.setattr(IPython.display, "display", record(ours))
    glue("ch1_ratio", "1,234", display=display)
    monkeypatch.setattr(myst_glue_module, "ipy_display", record(theirs))
    myst_nb.glue("ch1_ratio", "1,234", display=display)
    assert ours == theirs and len(ours) == 1
    bundle = ours[0][0][0]
    assert bundle == {("" if display else "application/papermill.record/") + "text/plain": "'1,234'"}


def _run_in_a_kernel(monkeypatch, env_value: str | None) -> list:
    """The outputs of one cell calling glue, run by a real kernel started with or without the variable."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell('from course_utils.notebook import glue\nglue("answer", "42", display=False)'))
    # the kernel inherits this process's environment, as the chapters' kernels inherit jupyter-book's
    if env_value is None:
        monkeypatch.delenv(BOOK_BUILD_ENV, raising=False)
    else:
        monkeypatch.setenv(BOOK_BUILD_ENV, env_value)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb.cells[0].outputs


def test_in_a_kernel_outside_the_book(monkeypatch):
    outputs = _run_in_a_kernel(monkeypatch, None)
    assert [(o.output_type, o.get("text")) for o in outputs] == [("stream", "answer: 42\n")]


def test_in_a_kernel_in_the_book_build(monkeypatch):
    pytest.importorskip("myst_nb")
    outputs = _run_in_a_kernel(monkeypatch, "1")
    assert len(outputs) == 1 and outputs[0].output_type == "display_data", outputs
    assert outputs[0].data == {"application/papermill.record/text/plain": "'42'"}
    assert outputs[0].metadata["scrapbook"] == {"name": "answer", "mime_prefix": "application/papermill.record/"}


def test_show_source_is_the_packages_own_code():
    import inspect

    from course_utils.notebook import show_source
    from course_utils.transformer import Block

    shown = show_source(Block)
    text = getattr(shown, "data", shown)
    assert text == inspect.getsource(Block)
    assert text.startswith("class Block(nn.Module):")
    assert "def _residual" in text  # the whole class, methods included


def test_show_source_refuses_what_has_no_source():
    from course_utils.notebook import show_source

    with pytest.raises(TypeError, match="class, function or method"):
        show_source(3)
