"""The set-up cell: every chapter and lab installs a pinned course_utils wherever it is missing.

The first code cell of every chapter (``chapters/*.md`` and its paired
``.ipynb``), lab solution (``solutions/*/*.ipynb``) and student lab
(``labs/*/*.ipynb``) must be exactly :func:`setup_cell`: it tries
``import course_utils`` and, where that fails (Colab, Kaggle, a JupyterHub,
Codespaces), installs the package from the course repository at the tag of
this release. The pin is named in one place each: the tag is ``v`` followed by
``[project].version`` of ``pyproject.toml``, the repository is
``repository.url`` of ``_config.yml``. No other code cell may install the
package (a second, stale set-up cell), and none may import a tool of the book
build (myst-nb, Sphinx, Jupyter Book, jupytext), which a plain notebook does
not have: ``course_utils.notebook.glue`` stands in for myst-nb's.

After a version bump or a move of the repository, rewrite the cells with::

    python tests/test_setup_cells.py    # chapters (.md, then their .ipynb) and solutions
    make labs                           # labs/ from the solutions
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: What marks a cell as one that installs the package.
INSTALLS = re.compile(r"(?:%|!)\s*pip\s+install\b[^\n]*\bcourse_utils\b")
#: An import of a tool that only the book build has.
BOOK_TOOL_IMPORT = re.compile(r"^\s*(?:from|import)\s+(myst_nb|myst_parser|sphinx\w*|jupyter_book|jupytext)\b", re.M)


def setup_cell(root: Path = ROOT) -> str:
    """The canonical set-up cell of the course in ``root``, built from pyproject.toml and _config.yml."""
    version = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    url = str(config["repository"]["url"]).strip().rstrip("/").removesuffix(".git")
    return ("# Set-up: installs course_utils, pinned to this release, wherever it is missing\n"
            "# (Colab, Kaggle, JupyterHub, Codespaces); does nothing where it is installed.\n"
            "try:\n"
            "    import course_utils\n"
            "except ImportError:\n"
            f'    %pip install -q "course_utils @ git+{url}@v{version}"')


def notebooks(root: Path = ROOT) -> list[Path]:
    """Every chapter (both files of each pair), solution and lab notebook of the course in ``root``."""
    return sorted([*root.glob("chapters/*.md"), *root.glob("chapters/*.ipynb"),
                   *root.glob("solutions/*/*.ipynb"), *root.glob("labs/*/*.ipynb")])


def code_cells(path: Path) -> list[tuple[str, dict]]:
    """(source, metadata) of each code cell of a notebook or a MyST markdown notebook."""
    if path.suffix == ".md":
        jupytext = pytest.importorskip("jupytext", reason="reading MyST notebooks needs the book tools (.[book])")
        nb = jupytext.read(path)
        return [(c.source, dict(c.metadata)) for c in nb.cells if c.cell_type == "code"]
    nb = json.loads(path.read_text(encoding="utf-8"))
    src = lambda c: "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
    return [(src(c), c.get("metadata", {})) for c in nb["cells"] if c["cell_type"] == "code"]


NOTEBOOKS = notebooks()


def test_there_are_notebooks_of_every_kind():
    kinds = {p.relative_to(ROOT).parts[0] + p.suffix for p in NOTEBOOKS}
    assert {"chapters.md", "chapters.ipynb", "labs.ipynb"} <= kinds, kinds
    if (ROOT / "solutions").is_dir():  # the instructor repository (the student edition has none)
        assert "solutions.ipynb" in kinds, kinds


def test_the_pin_is_a_release_of_the_course_repository():
    cell = setup_cell()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"[project].version {version!r} is not a release number"
    assert re.search(r'"course_utils @ git\+https://github\.com/[\w.-]+/[\w.-]+@v\d+\.\d+\.\d+"', cell), cell
    assert INSTALLS.search(cell)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_first_code_cell_is_the_set_up_cell_and_no_cell_needs_the_book(path):
    cells = code_cells(path)
    expected = setup_cell()
    assert cells, f"{path.relative_to(ROOT)} has no code cell"
    first, meta = cells[0]
    assert first == expected, (
        f"{path.relative_to(ROOT)}: the first code cell is not the set-up cell; run "
        f"`python tests/test_setup_cells.py` (and `make labs`). It is:\n{first}\n\nExpected:\n{expected}")
    others = [src for src, _ in cells[1:] if INSTALLS.search(src)]
    assert not others, f"{path.relative_to(ROOT)}: another cell installs course_utils:\n{others[0]}"
    imports = sorted({m for src, _ in cells for m in BOOK_TOOL_IMPORT.findall(src)})
    assert not imports, f"{path.relative_to(ROOT)} imports {imports}, which plain notebooks do not have"
    if path.parts[-3] in ("solutions", "labs"):
        assert meta.get("nbgrader", {}).get("locked"), f"{path.relative_to(ROOT)}: the set-up cell must be locked"


# ---------------------------------------------------------------------------
# Rewriting the cells (python tests/test_setup_cells.py)
# ---------------------------------------------------------------------------

_MD_FIRST_CELL = re.compile(r"(```\{code-cell\}[^\n]*\n(?:---\n.*?\n---\n|(?::[^\n]*\n)*))(.*?)(\n```)", re.S)


def _write_markdown(path: Path, cell: str) -> bool:
    text = path.read_text(encoding="utf-8")
    new = _MD_FIRST_CELL.sub(lambda m: m.group(1) + cell + m.group(3), text, count=1)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def _write_notebook(path: Path, cell: str) -> bool:
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    first["source"] = cell.splitlines(keepends=True)
    new = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def write(root: Path = ROOT) -> list[Path]:
    """Make the first code cell of every chapter and solution the set-up cell; the changed files.

    Each chapter's paired ``.ipynb`` is then brought up to date with jupytext;
    ``labs/`` is left to ``make labs``.
    """
    cell, changed = setup_cell(root), []
    for md in sorted(root.glob("chapters/*.md")):
        if _write_markdown(md, cell):
            changed.append(md)
        ipynb = md.with_suffix(".ipynb")
        before = ipynb.read_bytes() if ipynb.exists() else b""
        subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--update", "--to", "ipynb", str(md)], check=True)
        if ipynb.read_bytes() != before:
            changed.append(ipynb)
    for nb in sorted(root.glob("solutions/*/*.ipynb")):
        if _write_notebook(nb, cell):
            changed.append(nb)
    return changed


if __name__ == "__main__":
    for changed_path in write():
        print(f"rewrote {changed_path.relative_to(ROOT)}")
