"""The student edition: everything students may see of the course, ready to push.

This repository is the instructor's: ``solutions/`` holds every answer and
every hidden test. The student edition is a copy without them, meant for a
public repository from which students read the book, open the labs in
JupyterLab or Colab, and ``pip install`` the package. Command line (from the
instructor repository's root)::

    python -m course_utils.edition DEST [--repo-url URL] [--site-url URL] [--no-cache]

What goes in is a list, not a guess (see :data:`TOP_LEVEL` and
:data:`INSTRUCTOR_ONLY` below, the one place that decides):

- the book: ``_config.yml``, ``_toc.yml``, every page the table of contents
  names, ``chapters/`` (MyST sources and their paired ``.ipynb``), the
  bibliography, the logo and any image folders;
- ``labs/`` (the nbgrader release: stubs instead of solutions, no hidden tests);
- the package ``course_utils/`` and what installs and tests it:
  ``pyproject.toml``, ``constraints.txt``, ``environment.yml``, ``Makefile``,
  ``.ci/run``, ``.gitignore`` and the tests that need no solutions;
- ``README.md``, written from the template ``README_STUDENT.md``.

Lines between ``# >>> instructor only`` and ``# <<< instructor only`` in the
Makefile and ``.ci/run`` are left out (targets such as ``make labs`` that need
``solutions/``).

The repository address is set in one place, ``repository.url`` in
``_config.yml``. With ``--repo-url`` every mention of it (that setting, the
Colab set-up cell of every chapter and lab, the README) becomes the student
repository's address, so the book's Colab, Binder and repository buttons and
the Colab ``%pip install`` point there.

Jupyter Book executes every chapter; its cache (``_build/.jupyter_cache``) is
keyed by a hash of the code cells, so rewriting the address in the Colab cell
changes the key. :func:`copy_execution_cache` therefore copies the instructor's
cache into the edition with the same rewrite applied to the cached notebooks:
the outputs are those of code that differs only in an address inside
``if "google.colab" in sys.modules:``, a branch never taken when the book is
built. The edition's ``make book`` then executes nothing that the instructor's
build already executed.

Before it returns, :func:`make_edition` checks its own work with
:func:`find_leaks`: no line that appears only inside ``### BEGIN SOLUTION`` /
``### END SOLUTION`` or ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``
in ``solutions/`` (and nowhere in the package, the chapters or the students'
tests, which are public by design: see :data:`PUBLIC_SOURCES`) may appear in
any file of the edition.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

__all__ = [
    "TOP_LEVEL",
    "INSTRUCTOR_ONLY",
    "Edition",
    "make_edition",
    "edition_files",
    "toc_files",
    "secret_lines",
    "find_leaks",
    "rewrite_url",
    "copy_execution_cache",
    "site_url_for",
    "main",
]

# ---------------------------------------------------------------------------
# What goes into the edition: the one place that decides.
# ---------------------------------------------------------------------------

#: Files and folders copied from the instructor repository's root when they
#: exist (plus every page named in ``_toc.yml`` and the files ``_config.yml``
#: refers to). Everything else stays out.
TOP_LEVEL: tuple[str, ...] = (
    # the book
    "_config.yml",
    "_toc.yml",
    "chapters",
    "labs",
    "images",
    "figures",
    "_static",
    # the package, its environment and its tests
    "course_utils",
    "pyproject.toml",
    "constraints.txt",
    "environment.yml",
    "Makefile",
    ".ci/run",
    ".gitignore",
    "tests",
    # what an open course ships with
    "LICENSE",
    "LICENSE.md",
    "LICENSE.txt",
    "CITATION.cff",
)

#: Never in the edition, whatever the lists above or the table of contents
#: say (glob patterns on paths relative to the root). The tests listed here
#: read ``solutions/`` or the gradebook; every other file of ``tests/`` goes to
#: students, and the leak test runs that suite in the edition to prove it
#: passes without them.
INSTRUCTOR_ONLY: tuple[str, ...] = (
    "solutions",
    "solutions/*",
    "nbgrader_config.py",
    "gradebook.db",
    "submitted/*",
    "autograded/*",
    "feedback/*",
    "release/*",
    "grades/*",
    "README.md",  # the instructor README; students get README_STUDENT.md
    "README_STUDENT.md",
    "instructors.md",
    "publishing.md",
    "benchmarks/*",
    "tests/test_labs.py",
    "tests/test_grading.py",
    "tests/hostile.py",
    "tests/test_student_edition.py",
)

#: Never copied from anywhere: caches and editor leftovers.
JUNK: tuple[str, ...] = (
    "__pycache__", "*.pyc", ".ipynb_checkpoints", ".pytest_cache", ".hypothesis",
    "*.egg-info", ".DS_Store", "_build", ".venv",
)

#: Files in which ``# >>> instructor only`` ... ``# <<< instructor only``
#: blocks are dropped.
STRIPPED: tuple[str, ...] = ("Makefile", ".ci/run")
BLOCK_BEGIN = "# >>> instructor only"
BLOCK_END = "# <<< instructor only"

#: Kept when DEST is an existing clone of the student repository.
KEEP_IN_DEST: tuple[str, ...] = (".git", ".github", ".venv")

README_TEMPLATE = "README_STUDENT.md"
MARKER_PAIRS = (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"))
PAGE_SUFFIXES = (".md", ".ipynb", ".rst")
REPO_URL = re.compile(r"^https://[A-Za-z0-9.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def _junk(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in JUNK)


def _instructor_only(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, p) for p in INSTRUCTOR_ONLY)


def _walk(root: Path, top: str) -> Iterator[str]:
    """Root-relative paths of the files at or under ``top``, junk left out."""
    path = root / top
    if path.is_file():
        yield top
        return
    for folder, dirs, files in os.walk(path):
        rel_folder = Path(folder).relative_to(root).as_posix()
        dirs[:] = sorted(d for d in dirs if not _junk(d))
        for name in sorted(files):
            rel = f"{rel_folder}/{name}"
            if not _junk(name):
                yield rel


def _load_yaml(path: Path) -> dict:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a mapping, got {type(data).__name__}")
    return data


def toc_files(root: str | os.PathLike) -> list[str]:
    """The pages that ``_toc.yml`` names, as root-relative file paths.

    Example: a toc with ``root: intro`` and ``- file: chapters/01_x`` gives
    ``['intro.md', 'chapters/01_x.md']``.
    """
    root = Path(root)
    toc = _load_yaml(root / "_toc.yml")
    names: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("root", "file") and isinstance(value, str):
                    names.append(value)
                elif key == "glob" and isinstance(value, str):
                    names.extend(p.relative_to(root).with_suffix("").as_posix()
                                 for suffix in PAGE_SUFFIXES for p in root.glob(value + suffix))
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(toc)
    files = []
    for name in names:
        candidates = [name] if Path(name).suffix in PAGE_SUFFIXES else [name + s for s in PAGE_SUFFIXES]
        found = next((c for c in candidates if (root / c).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"_toc.yml names {name!r}, but none of {candidates} exists in {root}")
        if found not in files:
            files.append(found)
    return files


def _config_files(root: Path, config: dict) -> list[str]:
    """Files ``_config.yml`` refers to: bibliographies, logo, favicon, static folders."""
    refs: list[str] = list(config.get("bibtex_bibfiles") or [])
    for key in ("logo",):
        if config.get(key):
            refs.append(config[key])
    html = config.get("html") or {}
    if html.get("favicon"):
        refs.append(html["favicon"])
    sphinx_config = (config.get("sphinx") or {}).get("config") or {}
    refs += list(sphinx_config.get("html_static_path") or [])
    refs += list(sphinx_config.get("html_extra_path") or [])
    return [r for r in refs if (root / r).exists()]


def edition_files(root: str | os.PathLike) -> list[str]:
    """Root-relative paths of the instructor files that go into the edition, sorted.

    Raises ``ValueError`` if the table of contents names an instructor-only page
    (the edition's book would not build without it).
    """
    root = Path(root)
    config = _load_yaml(root / "_config.yml")
    pages = toc_files(root)
    forbidden = [p for p in pages if _instructor_only(p)]
    if forbidden:
        raise ValueError(f"_toc.yml names instructor-only pages {forbidden}; they cannot go to students "
                         f"(remove them from the toc or from INSTRUCTOR_ONLY in {__name__})")
    tops = list(TOP_LEVEL) + pages + _config_files(root, config)
    tops += [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg", ".gif", ".ico")]
    files: set[str] = set()
    for top in tops:
        if (root / top).exists():
            files.update(rel for rel in _walk(root, top) if not _instructor_only(rel))
    return sorted(files)


# ---------------------------------------------------------------------------
# The repository address
# ---------------------------------------------------------------------------

def _check_url(url: str, name: str) -> str:
    url = url.strip().rstrip("/").removesuffix(".git")
    if not REPO_URL.match(url):
        raise ValueError(f"{name} must look like https://github.com/ORG/REPO, got {url!r}")
    return url


def rewrite_url(text: str, old: str, new: str) -> str:
    """Replace every mention of the repository ``old`` with ``new``.

    A mention is ``old`` not followed by a letter, digit, ``_`` or ``-`` (so
    ``https://github.com/o/course-extras`` is not a mention of ``.../o/course``).
    Example: ``rewrite_url("git+https://github.com/a/b", "https://github.com/a/b",
    "https://github.com/c/d")`` gives ``"git+https://github.com/c/d"``.
    """
    if old == new:
        return text
    return re.sub(re.escape(old) + r"(?![\w-])", lambda _: new, text)


def site_url_for(repo_url: str) -> str:
    """Where GitHub Pages serves a repository's site.

    Example: ``https://github.com/org/course`` gives ``https://org.github.io/course/``;
    other hosts give the repository address itself.
    """
    m = re.match(r"^https://github\.com/([^/]+)/([^/]+)$", repo_url)
    if not m:
        return repo_url
    org, repo = m.groups()
    if repo.lower() == f"{org.lower()}.github.io":
        return f"https://{org.lower()}.github.io/"
    return f"https://{org.lower()}.github.io/{repo}/"


def _strip_instructor_blocks(text: str, name: str) -> str:
    out, inside = [], False
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        s = line.strip()
        if s.startswith(BLOCK_BEGIN):
            if inside:
                raise ValueError(f"{name}:{number}: {BLOCK_BEGIN!r} inside another instructor-only block")
            inside = True
        elif s.startswith(BLOCK_END):
            if not inside:
                raise ValueError(f"{name}:{number}: {BLOCK_END!r} without {BLOCK_BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{name}: {BLOCK_BEGIN!r} is never closed by {BLOCK_END!r}")
    return "".join(out)


# ---------------------------------------------------------------------------
# Secret lines and the leak check
# ---------------------------------------------------------------------------

def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


#: Files of the instructor repository written to be public, which students see
#: anyway: the package (``pip install`` gives its source), the book's sources
#: and the tests that go to students (instructor-only files excluded). A
#: solution line that also appears in one of them is not a secret of the labs
#: (``return out`` is everywhere; so is a helper that a lab re-implements and
#: the package or a test's reference implementation already holds). What the
#: edition derives from ``solutions/`` (``labs/``, the built book) is checked
#: against the rest.
PUBLIC_SOURCES: tuple[str, ...] = ("course_utils/**/*.py", "chapters/*.md", "tests/*.py")


def secret_lines(root: str | os.PathLike) -> set[str]:
    """Stripped lines that only the markers of ``root/solutions`` hold.

    A line is secret if it lies inside ``### BEGIN SOLUTION`` ...
    ``### END SOLUTION`` or ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN
    TESTS`` in a notebook under ``solutions/``, and appears neither outside the
    markers in any of those notebooks (the parts students see) nor in the
    :data:`PUBLIC_SOURCES`; empty lines never are. Example: a solution cell
    ``def f(x):``, ``### BEGIN SOLUTION``, ``return 2 * x``, ``### END SOLUTION``
    gives ``{'return 2 * x'}``. Returns an empty set when there is no
    ``solutions/`` (a student edition has none).
    """
    root = Path(root)
    solutions = root / "solutions"
    secret: set[str] = set()
    public: set[str] = set()
    if not solutions.is_dir():
        return secret
    begins = {b for b, _ in MARKER_PAIRS}
    ends = {e for _, e in MARKER_PAIRS}
    for path in sorted(solutions.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            inside = False
            for line in _source(cell).splitlines():
                s = line.strip()
                if s in begins:
                    inside = True
                elif s in ends:
                    inside = False
                elif s:
                    (secret if inside else public).add(s)
    for pattern in PUBLIC_SOURCES:
        for path in root.glob(pattern):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not _instructor_only(rel) and not any(_junk(p) for p in path.parts):
                public.update(line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines())
    return secret - public


class _Text(HTMLParser):
    """The text of an HTML page as a browser would show it (entities decoded, tags dropped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _lines(path: Path) -> set[str]:
    """Every stripped line a person or a tool could read from a file: its raw
    text, and also the cell sources and outputs of a notebook and the text
    of an HTML page (where syntax highlighting splits code into tags)."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    lines = {s for s in (line.strip() for line in raw.splitlines()) if s}
    texts: list[str] = []
    if path.suffix in (".html", ".htm"):
        parser = _Text()
        parser.feed(raw)
        texts.append("".join(parser.parts))
    if path.suffix in (".ipynb", ".json", ".txt") or path.name.endswith(".ipynb.txt"):
        try:
            nb = json.loads(raw)
        except ValueError:
            nb = None
        if isinstance(nb, dict) and isinstance(nb.get("cells"), list):
            for cell in nb["cells"]:
                texts.append(_source(cell))
                for output in cell.get("outputs", []):
                    text = output.get("text") or (output.get("data") or {}).get("text/plain") or ""
                    texts.append("".join(text) if isinstance(text, list) else str(text))
                    html = (output.get("data") or {}).get("text/html")
                    if html:
                        parser = _Text()
                        parser.feed("".join(html) if isinstance(html, list) else html)
                        texts.append("".join(parser.parts))
    for text in texts:
        lines.update(s for s in (line.strip() for line in text.splitlines()) if s)
    return lines


def find_leaks(folder: str | os.PathLike, secret: set[str]) -> list[tuple[str, str]]:
    """Every ``(file, line)`` in ``folder`` (recursively, hidden folders and
    ``_build`` included) whose stripped line is in ``secret``."""
    folder = Path(folder)
    leaks = []
    if not secret:
        return leaks
    for path in sorted(folder.rglob("*")):
        if path.is_file() and ".git" not in path.relative_to(folder).parts:
            for line in sorted(_lines(path) & secret):
                leaks.append((path.relative_to(folder).as_posix(), line))
    return leaks


# ---------------------------------------------------------------------------
# The execution cache
# ---------------------------------------------------------------------------

def copy_execution_cache(src: str | os.PathLike, dest: str | os.PathLike, old_url: str, new_url: str,
                         root: str | os.PathLike | None = None, edition: str | os.PathLike | None = None) -> int:
    """Copy a Jupyter Book execution cache, with the repository address rewritten
    in the cached notebooks so that they match the edition's chapters.

    ``src`` is left untouched (the copy is made first, then edited). Records of
    notebooks ``root`` is given for are re-pointed from ``root`` to ``edition``;
    a record whose notebook under ``root`` is gone, or whose code cells are no
    longer those of that notebook (an older version of an edited chapter), is
    dropped: it could never be used again and may hold code since moved into a
    solution. The project list (which notebooks a build last staged, with the
    instructor's paths) is emptied. Returns the number of cached notebooks kept.
    """
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    src, dest = Path(src), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    cache = get_cache(dest)
    for record in cache.list_project_records():
        cache.remove_nb_from_project(record.pk)
    count = 0
    for record in list(cache.list_cache_records()):
        bundle = cache.get_cache_bundle(record.pk)
        nb = bundle.nb
        if root is not None and _is_stale(nb, Path(record.uri), Path(root)):
            cache.remove_cache(record.pk)
            continue
        changed = False
        for cell in nb.cells:
            new = rewrite_url(cell.source, old_url, new_url)
            changed |= new != cell.source
            cell.source = new
        uri = record.uri
        if root is not None and edition is not None:
            try:
                uri = str(Path(edition) / Path(uri).relative_to(root))
            except ValueError:
                pass
        if changed or uri != record.uri:
            data = dict(record.data or {})
            cache.remove_cache(record.pk)
            cache.cache_notebook_bundle(CacheBundleIn(nb, uri, data=data), check_validity=False, overwrite=True)
        count += 1
    return count


def _code_cells(nb: Any) -> list[str]:
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def _is_stale(cached: Any, uri: Path, root: Path) -> bool:
    """True if ``uri`` lies under ``root`` and is gone or no longer has the cached notebook's code cells."""
    try:
        uri.relative_to(root)
    except ValueError:
        return False  # not one of this repository's notebooks: leave it alone
    if not uri.is_file():
        return True
    import nbformat

    if uri.suffix == ".ipynb":
        current = nbformat.read(uri, as_version=4)
    else:
        from myst_nb.core.read import read_myst_markdown_notebook

        current = read_myst_markdown_notebook(uri.read_text(encoding="utf-8"), path=uri)
    return _code_cells(current) != _code_cells(cached)


# ---------------------------------------------------------------------------
# Making the edition
# ---------------------------------------------------------------------------

@dataclass
class Edition:
    """What :func:`make_edition` wrote."""

    dest: Path
    repo_url: str
    site_url: str
    files: list[str] = field(default_factory=list)
    cached_notebooks: int = 0


def _prepare_dest(dest: Path, root: Path, force: bool) -> None:
    if dest == root or root in dest.parents or dest in root.parents:
        raise ValueError(f"DEST must lie outside the instructor repository {root}, got {dest}")
    if not dest.exists():
        dest.mkdir(parents=True)
        return
    if not dest.is_dir():
        raise ValueError(f"DEST must be a folder, got the file {dest}")
    leftovers = [p for p in dest.iterdir() if p.name not in KEEP_IN_DEST]
    if not leftovers:
        return
    if (dest / ".git").exists():
        status = subprocess.run(["git", "-C", str(dest), "status", "--porcelain"],
                                capture_output=True, text=True)
        if status.returncode != 0 or status.stdout.strip():
            raise ValueError(f"DEST {dest} is a git clone with uncommitted changes (or git failed): "
                             f"commit or discard them first\n{status.stdout}{status.stderr}")
    elif not force:
        raise ValueError(f"DEST {dest} is not empty and not a git clone; give a new or empty folder, "
                         "a clone of the student repository, or --force to replace its contents")
    for p in leftovers:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _labs_list(dest: Path, repo_url: str, branch: str) -> str:
    """A markdown list of the labs, each with its Colab link."""
    m = re.match(r"^https://github\.com/(.+)$", repo_url)
    items = []
    for nb_path in sorted((dest / "labs").glob("*/*.ipynb")):
        rel = nb_path.relative_to(dest).as_posix()
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        title = nb_path.stem
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "markdown":
                heading = next((l for l in _source(cell).splitlines() if l.startswith("# ")), None)
                if heading:
                    title = heading[2:].strip()
                    break
        link = f" ([open in Colab](https://colab.research.google.com/github/{m.group(1)}/blob/{branch}/{rel}))" if m else ""
        items.append(f"- {title}: [`{rel}`]({rel}){link}")
    return "\n".join(items) if items else "- (no labs yet)"


def make_edition(dest: str | os.PathLike, root: str | os.PathLike | None = None, repo_url: str | None = None,
                 site_url: str | None = None, copy_cache: bool = True, force: bool = False) -> Edition:
    """Write the student edition of the course in ``root`` into ``dest``.

    Args:
        dest: a new or empty folder, or a clean clone of the student repository
            (everything but ``.git``, ``.github`` and ``.venv`` is replaced).
        root: the instructor repository (default: the current folder).
        repo_url: the student repository, e.g. ``https://github.com/org/course``
            (default: ``repository.url`` of ``_config.yml``, unchanged).
        site_url: where the book will be served (default: GitHub Pages of ``repo_url``).
        copy_cache: copy ``root/_build/.jupyter_cache`` (rewritten) when it exists,
            so that building the edition's book executes no chapter again.
        force: replace the contents of a non-empty folder that is not a git clone.

    Raises ``ValueError`` for a bad argument and ``RuntimeError`` when the
    finished edition holds a solution or hidden-test line.
    """
    root = Path(root if root is not None else os.getcwd()).resolve()
    if not (root / "_config.yml").is_file() or not (root / "course_utils").is_dir():
        raise ValueError(f"root must be the course repository (with _config.yml and course_utils/), got {root}")
    if not (root / "solutions").is_dir():
        raise ValueError(f"root {root} has no solutions/: it is already a student edition")
    if not (root / README_TEMPLATE).is_file():
        raise ValueError(f"root {root} has no {README_TEMPLATE}, the template of the students' README")
    config = _load_yaml(root / "_config.yml")
    repository = config.get("repository") or {}
    if not repository.get("url"):
        raise ValueError(f"{root / '_config.yml'} has no repository.url: the one place the address is set")
    old_url = _check_url(str(repository["url"]), "repository.url in _config.yml")
    new_url = _check_url(repo_url, "repo_url") if repo_url else old_url
    branch = str(repository.get("branch") or "main")
    site = site_url.rstrip("/") + "/" if site_url else site_url_for(new_url)
    dest = Path(dest).resolve()

    files = edition_files(root)
    _prepare_dest(dest, root, force)
    for rel in files:
        src, out = root / rel, dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            shutil.copy2(src, out)  # binary (images): copied as is
            continue
        new = rewrite_url(text, old_url, new_url)
        if rel in STRIPPED:
            new = _strip_instructor_blocks(new, rel)
        if new == text:
            shutil.copy2(src, out)
        else:
            out.write_text(new, encoding="utf-8")
            shutil.copymode(src, out)

    readme = (root / README_TEMPLATE).read_text(encoding="utf-8")
    values = {
        "title": str(config.get("title", "")),
        "repo_url": new_url,
        "repo_name": new_url.split("/", 3)[-1],
        "repo_dir": new_url.rsplit("/", 1)[-1],
        "site_url": site,
        "branch": branch,
        "labs": _labs_list(dest, new_url, branch),
    }
    for key, value in values.items():
        readme = readme.replace("{{ " + key + " }}", value)
    left = re.findall(r"\{\{ *[\w]+ *\}\}", readme)
    if left:
        raise ValueError(f"{README_TEMPLATE} has unknown placeholders {sorted(set(left))}; known: {sorted(values)}")
    (dest / "README.md").write_text(rewrite_url(readme, old_url, new_url), encoding="utf-8")
    files.append("README.md")

    written = _load_yaml(dest / "_config.yml")
    if (written.get("repository") or {}).get("url") != new_url:
        raise RuntimeError(f"repository.url in {dest / '_config.yml'} is not {new_url!r} after the rewrite")

    cached = 0
    cache = root / "_build" / ".jupyter_cache"
    if copy_cache and cache.is_dir():
        cached = copy_execution_cache(cache, dest / "_build" / ".jupyter_cache", old_url, new_url, root, dest)

    leaks = find_leaks(dest, secret_lines(root))
    if leaks:
        shown = "\n".join(f"  {f}: {line}" for f, line in leaks[:20])
        raise RuntimeError(f"the edition in {dest} holds {len(leaks)} solution or hidden-test lines:\n{shown}")
    return Edition(dest=dest, repo_url=new_url, site_url=site, files=sorted(files), cached_notebooks=cached)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m course_utils.edition", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", help="folder to write (new, empty, or a clean clone of the student repository)")
    ap.add_argument("--repo-url", help="the student repository, e.g. https://github.com/org/course "
                                       "(default: repository.url of _config.yml)")
    ap.add_argument("--site-url", help="where the book is served (default: the GitHub Pages address of --repo-url)")
    ap.add_argument("--root", help="the instructor repository (default: the current folder)")
    ap.add_argument("--no-cache", action="store_true", help="do not copy the book's execution cache")
    ap.add_argument("--force", action="store_true", help="replace the contents of a non-empty folder that is not a git clone")
    args = ap.parse_args(argv)
    try:
        ed = make_edition(args.dest, args.root, args.repo_url, args.site_url, not args.no_cache, args.force)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote the student edition ({len(ed.files)} files) to {ed.dest}")
    print(f"repository: {ed.repo_url}   site: {ed.site_url}")
    if ed.cached_notebooks:
        print(f"copied {ed.cached_notebooks} executed notebooks into {ed.dest / '_build' / '.jupyter_cache'}")
    print("no solution or hidden-test line found in it. Next: cd there, `make book`, commit and push.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
