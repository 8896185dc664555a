"""The student edition: everything students may see of the course, ready to push.

This repository is the instructor's: ``solutions/`` holds every answer and
every hidden test, ``course_grading/`` the toolkit that grades with them. The
student edition is a copy without them, meant for a public repository from
which students read the book, open the labs in JupyterLab or Colab, and
``pip install`` the package. Command line (from the instructor repository's
root)::

    course-student-edition DEST --repo-url URL [--site-url URL] [--no-cache] [--force]

What goes in is a list, not a guess: :mod:`course_grading.manifest` decides
(the book, ``labs/``, the package ``course_utils/`` and what installs and tests
it, ``README.md`` written from the template ``README_STUDENT.md``; never
``solutions/``, ``course_grading/`` or the instructors' tests). Instructor-only
blocks are cut from the Makefile, ``.ci/run`` and ``pyproject.toml``, so the
edition's ``pyproject.toml`` names neither this package, nor its ``instructor``
extra, nor its commands; :func:`make_edition` checks that before it returns.

The addresses are set in one place each, ``repository.url`` and
``html.baseurl`` (the site) in ``_config.yml``. :func:`make_edition` replaces
every mention of them (those settings, the Colab set-up cell of every chapter
and lab with its ``git+URL@vX.Y.Z`` install, the README) with the student
repository's address and the student site (GitHub Pages' address of that
repository, :func:`site_url_for`, unless ``--site-url`` says otherwise), so the
book's Colab, Binder and repository buttons and the Colab ``%pip install``
point there.

Jupyter Book executes every chapter; its cache (``_build/.jupyter_cache``) is
keyed by a hash of the code cells, so rewriting the address in the Colab cell
changes the key. :func:`copy_execution_cache` therefore copies the instructor's
cache into the edition with the same rewrite applied to the cached notebooks:
the outputs are those of code that differs only in the address of a
``%pip install`` that runs only where ``course_utils`` is missing, which is
never the case when the book is built. The edition's ``make book`` then executes nothing that the instructor's
build already executed.

Before it returns, :func:`make_edition` runs the leak check of
:mod:`course_grading.leaks` on every file it wrote, the execution cache included.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_grading.cells import cell_source
from course_grading.course import course_folder
from course_grading.leaks import find_leaks, secret_lines
from course_grading.manifest import STRIPPED, edition_files, load_yaml, strip_instructor_blocks

__all__ = ["Edition", "make_edition", "rewrite_url", "rewrite_addresses", "site_url_for", "copy_execution_cache"]

#: Kept when DEST is an existing clone of the student repository.
KEEP_IN_DEST: tuple[str, ...] = (".git", ".github", ".venv")
README_TEMPLATE = "README_STUDENT.md"
REPO_URL = re.compile(r"^https://[A-Za-z0-9.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
#: Requirements the students' pyproject.toml must not name: the grading machinery.
GRADING_REQUIREMENTS: tuple[str, ...] = ("nbgrader",)


# ---------------------------------------------------------------------------
# The addresses
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


def rewrite_addresses(text: str, addresses: Mapping[str, str]) -> str:
    """Apply :func:`rewrite_url` for every ``old -> new`` pair of ``addresses``, in order."""
    for old, new in addresses.items():
        text = rewrite_url(text, old, new)
    return text


def _addresses(config: dict[str, Any], repo_url: str, site: str) -> dict[str, str]:
    """``old -> new`` for the repository and the site: ``repository.url`` becomes
    ``repo_url``, and the site (``html.baseurl``, else GitHub Pages' address of the
    repository) becomes ``site``. Example: ``{'https://github.com/a/b':
    'https://github.com/c/d', 'https://a.github.io/b': 'https://c.github.io/d'}``."""
    repository = config.get("repository") or {}
    if not repository.get("url"):
        raise ValueError("_config.yml has no repository.url: the one place the address is set")
    old_url = _check_url(str(repository["url"]), "repository.url in _config.yml")
    old_site = str((config.get("html") or {}).get("baseurl") or site_url_for(old_url))
    return {old_url: repo_url, old_site.rstrip("/"): site.rstrip("/")}


# ---------------------------------------------------------------------------
# The execution cache
# ---------------------------------------------------------------------------

def copy_execution_cache(src: str | os.PathLike, dest: str | os.PathLike, addresses: Mapping[str, str],
                         root: str | os.PathLike | None = None, edition: str | os.PathLike | None = None) -> int:
    """Copy a Jupyter Book execution cache, with the ``old -> new`` ``addresses``
    rewritten in the cached notebooks (as in the edition's chapters, so that
    their cache keys match).

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
            new = rewrite_addresses(cell.source, addresses)
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
                heading = next((l for l in cell_source(cell).splitlines() if l.startswith("# ")), None)
                if heading:
                    title = heading[2:].strip()
                    break
        link = f" ([open in Colab](https://colab.research.google.com/github/{m.group(1)}/blob/{branch}/{rel}))" if m else ""
        items.append(f"- {title}: [`{rel}`]({rel}){link}")
    return "\n".join(items) if items else "- (no labs yet)"


def _copy(root: Path, dest: Path, files: list[str], addresses: Mapping[str, str]) -> None:
    """Copy ``files`` with the addresses rewritten and instructor-only blocks cut (binary files as they are)."""
    for rel in files:
        src, out = root / rel, dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = src.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            shutil.copy2(src, out)  # binary (images, weights): copied as is
            continue
        new = rewrite_addresses(text, addresses)
        if rel in STRIPPED:
            new = strip_instructor_blocks(new, rel)
        if new == text:
            shutil.copy2(src, out)
        else:
            out.write_text(new, encoding="utf-8")
            shutil.copymode(src, out)


def _write_readme(root: Path, dest: Path, config: dict[str, Any], repo_url: str, site: str) -> None:
    """``README.md`` from ``README_STUDENT.md`` with its ``{{ placeholders }}`` filled in."""
    readme = (root / README_TEMPLATE).read_text(encoding="utf-8")
    branch = str((config.get("repository") or {}).get("branch") or "main")
    values = {
        "title": str(config.get("title", "")),
        "repo_url": repo_url,
        "repo_name": repo_url.split("/", 3)[-1],
        "repo_dir": repo_url.rsplit("/", 1)[-1],
        "site_url": site,
        "branch": branch,
        "labs": _labs_list(dest, repo_url, branch),
    }
    for key, value in values.items():
        readme = readme.replace("{{ " + key + " }}", value)
    left = re.findall(r"\{\{ *[\w]+ *\}\}", readme)
    if left:
        raise ValueError(f"{README_TEMPLATE} has unknown placeholders {sorted(set(left))}; known: {sorted(values)}")
    (dest / "README.md").write_text(readme, encoding="utf-8")


def _check_written(dest: Path, repo_url: str, site: str, has_baseurl: bool) -> None:
    """Raise ``RuntimeError`` unless the edition's ``_config.yml`` points at the student
    repository and site, and its ``pyproject.toml`` installs nothing of the grading toolkit."""
    config = load_yaml(dest / "_config.yml")
    if (config.get("repository") or {}).get("url") != repo_url:
        raise RuntimeError(f"repository.url in {dest / '_config.yml'} is not {repo_url!r} after the rewrite")
    baseurl = str((config.get("html") or {}).get("baseurl") or "")
    if has_baseurl and baseurl.rstrip("/") != site.rstrip("/"):
        raise RuntimeError(f"html.baseurl in {dest / '_config.yml'} is {baseurl!r}, not the student site {site!r}")
    text = (dest / "pyproject.toml").read_text(encoding="utf-8")
    project = tomllib.loads(text)["project"]
    extras = project.get("optional-dependencies") or {}
    requirements = [r for reqs in [project.get("dependencies") or [], *extras.values()] for r in reqs]
    named = [r for r in requirements if re.match(r"\s*([\w.-]+)", r).group(1).lower() in GRADING_REQUIREMENTS]
    if "course_grading" in text or "instructor" in extras or named:
        raise RuntimeError(f"{dest / 'pyproject.toml'} still installs instructor tooling (course_grading, the "
                           f"'instructor' extra, {', '.join(GRADING_REQUIREMENTS)}): put it between "
                           "'# >>> instructor only' and '# <<< instructor only' in pyproject.toml")


def make_edition(dest: str | os.PathLike, root: str | os.PathLike | None = None, repo_url: str | None = None,
                 site_url: str | None = None, copy_cache: bool = True, force: bool = False) -> Edition:
    """Write the student edition of the course in ``root`` into ``dest``.

    Args:
        dest: a new or empty folder, or a clean clone of the student repository
            (everything but ``.git``, ``.github`` and ``.venv`` is replaced).
        root: the instructor repository (default: the current folder).
        repo_url: the student repository, e.g. ``https://github.com/org/course`` (required).
        site_url: where the book will be served (default: GitHub Pages of ``repo_url``).
        copy_cache: copy ``root/_build/.jupyter_cache`` (rewritten) when it exists,
            so that building the edition's book executes no chapter again.
        force: replace the contents of a non-empty folder that is not a git clone.

    Raises ``ValueError`` for a bad argument and ``RuntimeError`` when the
    finished edition holds a solution or hidden-test line or instructor tooling.
    """
    root = Path(root if root is not None else os.getcwd()).resolve()
    if not repo_url:
        raise ValueError("repo_url is required: the student repository's address, https://github.com/ORG/REPO")
    if not (root / "_config.yml").is_file() or not (root / "course_utils").is_dir():
        raise ValueError(f"root must be the course repository (with _config.yml and course_utils/), got {root}")
    if not (root / "nbgrader_config.py").is_file() or not course_folder(root, "source").is_dir():
        raise ValueError(f"root {root} has no nbgrader_config.py or no lab sources: it is already a student edition")
    if not (root / README_TEMPLATE).is_file():
        raise ValueError(f"root {root} has no {README_TEMPLATE}, the template of the students' README")
    config = load_yaml(root / "_config.yml")
    new_url = _check_url(repo_url, "repo_url")
    site = (site_url or site_url_for(new_url)).rstrip("/") + "/"
    addresses = _addresses(config, new_url, site)
    dest = Path(dest).resolve()

    files = edition_files(root)
    _prepare_dest(dest, root, force)
    _copy(root, dest, files, addresses)
    _write_readme(root, dest, config, new_url, site)
    files.append("README.md")
    _check_written(dest, new_url, site, has_baseurl=bool((config.get("html") or {}).get("baseurl")))

    cached = 0
    cache = root / "_build" / ".jupyter_cache"
    if copy_cache and cache.is_dir():
        cached = copy_execution_cache(cache, dest / "_build" / ".jupyter_cache", addresses, root, dest)

    leaks = find_leaks(dest, secret_lines(root), course_folder(root, "source").name)
    if leaks:
        shown = "\n".join(f"  {leak.describe()}" for leak in leaks[:20])
        raise RuntimeError(f"the edition in {dest} holds {len(leaks)} solution or hidden-test lines:\n{shown}")
    return Edition(dest=dest, repo_url=new_url, site_url=site, files=sorted(files), cached_notebooks=cached)
