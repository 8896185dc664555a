"""The built book: every chapter in the table of contents, rendered with its
figures, paired with a notebook that Colab can open; labs shown as student versions.

`make test` builds the book (strictly) before running pytest; this file reads `_build/html`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

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
    assert "google.colab" in strip(first_code["source"]), "the first code cell installs course_utils on Colab"
    assert "remove-cell" in first_code["metadata"].get("tags", []), "the Colab set-up cell is hidden in the book"


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
