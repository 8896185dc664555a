"""The built book: every chapter in the table of contents, rendered with its
figures, paired with a notebook that Colab can open; labs shown as student versions.

`make test` builds the book (strictly) before running pytest; this file reads `_build/html`.
Two checks need no build: the chapter/notebook pairs, and the labs' links to
the chapters, which must work in a notebook opened anywhere (Colab,
JupyterLab): absolute, on the published site (`html.baseurl` of `_config.yml`),
to a page of the table of contents.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from test_setup_cells import setup_cell

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


CHAPTERS = [f for f in toc_files() if f.startswith("chapters/")]
LABS = [f for f in toc_files() if f.startswith("labs/")]


@pytest.fixture(scope="module")
def built():
    assert (HTML / "index.html").is_file(), "no built book: run `make book` (make test builds it first)"
    return HTML


def test_every_toc_entry_exists_and_renders(built):
    for f in toc_files():
        assert any((ROOT / f).with_suffix(s).is_file() for s in (".md", ".ipynb")), f"{f} is in _toc.yml but missing"
        assert (built / f).with_suffix(".html").is_file(), f"{f} did not render"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_executed_figures(built, chapter):
    html = (built / chapter).with_suffix(".html").read_text()
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', html)
    assert len(images) >= 2, f"{chapter} shows {len(images)} figures; every chapter has at least two"
    for src in images:
        assert (built / chapter).parent.joinpath(src).resolve().is_file(), f"{chapter}: missing image {src}"
    assert "Traceback (most recent call last)" not in html


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_glued_values_are_in_the_text_not_printed(built, chapter):
    """In the build, course_utils.notebook.glue hands values to myst-nb (outside it, it prints `name: value`)."""
    html = (built / chapter).with_suffix(".html").read_text()
    keys = set(re.findall(r"\{glue:text\}`(\w+)`", (ROOT / f"{chapter}.md").read_text()))
    printed = sorted(key for key in keys if f"{key}: " in html)
    assert not printed, f"{chapter}: glue values printed instead of glued (is course_utils.notebook a Sphinx extension of the build?): {printed}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_is_paired_with_a_notebook(chapter):
    import jupytext

    md = jupytext.read(ROOT / f"{chapter}.md")
    nb_path = ROOT / f"{chapter}.ipynb"
    assert nb_path.is_file(), f"{chapter}.ipynb is missing: run `jupytext --to ipynb {chapter}.md`"
    nb = json.loads(nb_path.read_text())
    strip = lambda src: "".join(src) if isinstance(src, list) else src
    ours = [(c.cell_type, c.source) for c in md.cells]
    theirs = [(c["cell_type"], strip(c["source"])) for c in nb["cells"]]
    assert ours == theirs, f"{chapter}.ipynb is out of date: run `jupytext --update --to ipynb {chapter}.md`"
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert strip(first_code["source"]) == setup_cell(ROOT), "the first code cell is the set-up cell (test_setup_cells.py)"
    assert "remove-cell" in first_code["metadata"].get("tags", []), "the set-up cell is hidden in the book"


@pytest.mark.parametrize("page", CHAPTERS + LABS)
def test_colab_link_points_at_an_existing_notebook(built, page):
    html = (built / page).with_suffix(".html").read_text()
    links = re.findall(r'https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/([^"]+)', html)
    assert links, f"{page} has no Colab button"
    for path in set(links):
        assert path.endswith(".ipynb") and (ROOT / path).is_file(), f"{page}: Colab link to {path}, which does not exist"


@pytest.mark.parametrize("lab", LABS)
def test_lab_pages_show_the_student_version(built, lab):
    html = (built / lab).with_suffix(".html").read_text()
    assert "BEGIN SOLUTION" not in html and "BEGIN HIDDEN TESTS" not in html
    assert "NotImplementedError" in html


def lab_notebooks() -> list[Path]:
    """The labs as students get them and, in the instructor repository, their sources."""
    return sorted([*ROOT.glob("labs/*/*.ipynb"), *ROOT.glob("solutions/*/*.ipynb")])


# a markdown link's target, or an HTML link's
LINK_TARGET = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|href=[\"']([^\"']+)[\"']")


@pytest.mark.parametrize("notebook", lab_notebooks(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_lab_links_to_the_book_are_absolute_pages_of_the_site(notebook):
    base = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["baseurl"]
    assert re.fullmatch(r"https://[^\s]+/", base), f"html.baseurl in _config.yml must be an https address ending in /: {base!r}"
    pages = set(toc_files())
    nb = json.loads(notebook.read_text())
    to_the_book, wrong = [], []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for target in (a or b for a, b in LINK_TARGET.findall(text)):
            if target.startswith(base):
                m = re.fullmatch(r"(?P<page>[\w/.-]+)\.html(?:#[\w-]+)?", target[len(base):])
                (to_the_book if m and m["page"] in pages else wrong).append(target)
            elif not (target.startswith("#") or re.match(r"(https?|mailto):", target)) or "chapters/" in target:
                wrong.append(target)  # relative (leads nowhere outside the book) or the book on another address
    assert not wrong, (f"{notebook.relative_to(ROOT)}: links to the book must be {base}<page>.html "
                       f"with <page> in _toc.yml: {wrong}")
    assert any(t.startswith(base + "chapters/") for t in to_the_book), (
        f"{notebook.relative_to(ROOT)} links to no chapter of the book at {base}")
