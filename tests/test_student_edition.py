"""The student edition (`course-student-edition`) leaks nothing and stands on its own.

In a temporary folder, with a made-up student repository address:
- the command writes the book, labs/, course_utils/, the environment files,
  the tests that need no solutions and a README from README_STUDENT.md, and
  nothing else: no solutions/, no course_grading/, no gradebook, no
  nbgrader_config.py, no instructor notes or tests; every file is the
  instructor's own, with only the repository and site addresses rewritten (and
  the instructor-only blocks of the Makefile, .ci/run and pyproject.toml cut);
- its pyproject.toml names no grading code, extra or command, and a wheel built
  from it holds no file of course_grading;
- the addresses are the student repository's and site's everywhere: _config.yml
  (repository.url, html.baseurl), every Colab set-up cell (with its pinned
  `@vX.Y.Z`), the README and the built book's Colab/Binder/repository links;
- no line that only the solution and hidden-test markers of solutions/ hold
  appears in any file of it, nor in its built book (HTML, _sources, executed
  notebooks, caches), read line by line, including the text of syntax-highlighted HTML;
- its book builds with its own Makefile's `make book`, from the instructor's
  execution cache (no chapter runs again), and its own test suite passes,
  importing its own course_utils;
- the command, and `make student-edition`, refuse to run without the student
  repository's address, with a one-line usage message.

Needs the instructor's book built first (`make test` builds it before pytest):
the edition's build reuses its _build/.jupyter_cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from course_grading.edition import copy_execution_cache, make_edition, rewrite_url
from course_grading.leaks import find_leaks, secret_lines
from course_grading.manifest import is_instructor_only, toc_files

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
STAMP = VENV / ".installed"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
OLD_URL = str(CONFIG["repository"]["url"]).rstrip("/")
_ORG, _REPO = OLD_URL.split("/")[-2:]
OLD_SITE = str((CONFIG.get("html") or {}).get("baseurl") or f"https://{_ORG.lower()}.github.io/{_REPO}").rstrip("/")
STUDENT_URL = "https://github.com/example-org/llm-course-student"
STUDENT_SITE = "https://example-org.github.io/llm-course-student"
# the Colab set-up cell's install, pinned to a release tag or not
INSTALL = re.compile(r'%pip install [^\n]*"course_utils @ git\+' + re.escape(STUDENT_URL) + r'(@v\d+\.\d+\.\d+)?"')
MUST_NOT_EXIST = ["solutions", "course_grading", "course_utils/grading.py", "nbgrader_config.py", "gradebook.db",
                  "README_STUDENT.md", "publishing.md", "instructors.md", "benchmarks", "submitted", "autograded",
                  "feedback", "release", "tests/test_labs.py", "tests/test_grading.py", "tests/test_leaks.py",
                  "tests/hostile.py", "tests/test_student_edition.py"]
STRIPPED = ("Makefile", ".ci/run", "pyproject.toml")  # their instructor-only blocks are cut
BUILD_TIMEOUT = 1800
SUITE_TIMEOUT = 2400
# the edition's suite runs as the edition's `make test` runs it: two workers (pytest-xdist), unless this run has none
EDITION_XDIST = ["-n", "2", "--dist", "loadscope", "--no-loadscope-reorder"] if os.environ.get("PYTEST_XDIST_WORKER") else []


def _env(edition: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(edition)
    env.pop("PYTEST_ADDOPTS", None)
    for name in [n for n in env if n.startswith("PYTEST_XDIST_")] + ["PYTEST_CURRENT_TEST"]:
        env.pop(name)  # this run's own pytest-xdist worker: not the edition's
    return env


def _files(folder: Path, skip_build: bool = True) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not (skip_build and p.relative_to(folder).parts[0] == "_build"))


def _first_code_cell(path: Path) -> str:
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    text = path.read_text(encoding="utf-8")
    return text.split("```{code-cell}", 1)[1].split("```", 1)[0]


def _without_instructor_blocks(text: str) -> str:
    keep, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("# >>> instructor only"):
            inside = True
        elif line.lstrip().startswith("# <<< instructor only"):
            inside = False
        elif not inside:
            keep.append(line)
    return "".join(keep)


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("edition") / "llm-course-student"
    command = Path(sys.executable).with_name("course-student-edition")  # the console script of pyproject.toml
    done = subprocess.run([str(command), str(dest), "--repo-url", STUDENT_URL],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return dest


@pytest.fixture(scope="module")
def built(edition) -> str:
    """The edition's book, built by its own `make book` with this virtual environment."""
    done = subprocess.run(["make", "book", f"VENV={VENV}", "-o", str(STAMP)], cwd=edition, env=_env(edition),
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    return log


def test_only_what_students_may_see(edition):
    for name in MUST_NOT_EXIST:
        assert not (edition / name).exists(), f"{name} must not be in the student edition"
    for name in ["_config.yml", "_toc.yml", "references.bib", "pyproject.toml", "constraints.txt",
                 "environment.yml", "Makefile", "README.md", "course_utils/__init__.py", "tests/conftest.py"]:
        assert (edition / name).is_file(), f"{name} is missing from the student edition"
    for page in toc_files(ROOT):
        assert (edition / page).is_file(), f"the toc's page {page} is missing"
    # everything the book, the labs and the package hold, with nothing added
    for folder in ["chapters", "labs", "course_utils"]:
        theirs = {p.relative_to(ROOT).as_posix() for p in _files(ROOT / folder)
                  if "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts
                  and not is_instructor_only(p.relative_to(ROOT).as_posix())}
        ours = {p.relative_to(edition).as_posix() for p in _files(edition / folder)}
        assert ours == theirs, f"{folder}/ differs: missing {sorted(theirs - ours)}, extra {sorted(ours - theirs)}"
    for page in toc_files(ROOT):
        if page.startswith("chapters/"):
            assert (edition / page).with_suffix(".ipynb").is_file(), f"{page} has no paired .ipynb for Colab"
    tests = {p.name for p in (edition / "tests").iterdir() if p.is_file()}
    assert "test_site.py" in tests and "test_environment.py" in tests


def test_every_file_is_the_instructors_with_the_address_rewritten(edition):
    for path in _files(edition):
        rel = path.relative_to(edition).as_posix()
        if rel == "README.md":
            continue
        original = ROOT / rel
        assert original.is_file(), f"{rel} does not come from the instructor repository"
        assert os.access(path, os.X_OK) == os.access(original, os.X_OK), f"{rel} lost or gained its executable bit"
        data = original.read_bytes()
        try:
            expected = data.decode("utf-8").replace(OLD_URL, STUDENT_URL).replace(OLD_SITE, STUDENT_SITE)
        except UnicodeDecodeError:
            assert path.read_bytes() == data, f"{rel} differs from the instructor's"
            continue
        if rel in STRIPPED:
            expected = _without_instructor_blocks(expected)
        assert path.read_text(encoding="utf-8") == expected, f"{rel} differs from the instructor's"


def test_the_student_repository_address_everywhere(edition):
    config = yaml.safe_load((edition / "_config.yml").read_text())
    assert config["repository"]["url"] == STUDENT_URL
    if (CONFIG.get("html") or {}).get("baseurl"):
        assert config["html"]["baseurl"].rstrip("/") == STUDENT_SITE, config["html"]
    for old in (OLD_URL, OLD_SITE):
        holders = [p.relative_to(edition).as_posix() for p in _files(edition)
                   if old in p.read_bytes().decode("utf-8", errors="replace")]
        assert not holders, f"the instructor's address {old} is still in {holders}"
    chapters = [edition / p for p in toc_files(ROOT) if p.startswith("chapters/")]
    notebooks = chapters + [p.with_suffix(".ipynb") for p in chapters] + sorted((edition / "labs").glob("*/*.ipynb"))
    assert notebooks, "no chapter or lab in the edition"
    for path in notebooks:
        cell = _first_code_cell(path)
        assert INSTALL.search(cell), (
            f"{path.relative_to(edition)}: the Colab set-up cell does not install from {STUDENT_URL}:\n{cell}")
    readme = (edition / "README.md").read_text()
    assert STUDENT_URL in readme and STUDENT_SITE + "/" in readme
    assert "{{" not in readme, "a placeholder of README_STUDENT.md was left"
    for lab in (edition / "labs").glob("*/*.ipynb"):
        rel = lab.relative_to(edition).as_posix()
        assert (f"https://colab.research.google.com/github/example-org/llm-course-student/blob/"
                f"{config['repository'].get('branch', 'main')}/{rel}") in readme, f"README has no Colab link to {rel}"


def test_no_solution_line_in_the_edition(edition):
    leaks = find_leaks(edition, secret_lines(ROOT))
    assert not leaks, f"solution or hidden-test lines in the edition: {leaks[:10]}"


def test_the_makefile_test_target_needs_no_solutions(edition):
    done = subprocess.run(["make", "-n", "test", f"VENV={VENV}", "-o", str(STAMP)], cwd=edition,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    pytest_lines = [line for line in done.stdout.splitlines() if "pytest" in line]
    assert pytest_lines, done.stdout
    assert not any("solutions" in line for line in pytest_lines), pytest_lines
    makefile = (edition / "Makefile").read_text()
    for command in ("course-generate", "course-student-edition", "course_grading", "course_utils.grading"):
        assert command not in makefile, f"the student Makefile still has instructor-only targets ({command})"


def test_the_edition_installs_no_grading_code(edition, tmp_path):
    text = (edition / "pyproject.toml").read_text()
    project = tomllib.loads(text)["project"]
    assert "course_grading" not in text and "scripts" not in project, text
    assert set(project["optional-dependencies"]) == {"book", "labs", "test"}, project["optional-dependencies"]
    requirements = [r for reqs in [project["dependencies"], *project["optional-dependencies"].values()] for r in reqs]
    assert not [r for r in requirements if r.startswith("nbgrader")], requirements
    # a wheel built from the edition (a copy: building writes build/ and *.egg-info into the tree)
    source = tmp_path / "source"
    shutil.copytree(edition, source, ignore=shutil.ignore_patterns("_build", ".git"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "wheels"), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("course_utils/") for n in names) and "course_utils/transformer.py" in names, names
    grading = [n for n in names if "course_grading" in n or n == "course_utils/grading.py"]
    assert not grading, f"the students' wheel holds grading code: {grading}"
    entry_points = [n for n in names if n.endswith("entry_points.txt")]
    for name in entry_points:
        assert "course_grading" not in zipfile.ZipFile(wheel).read(name).decode(), name


def test_the_edition_book_builds_from_the_cache_and_leaks_nothing(edition, built):
    chapters = [p for p in toc_files(edition) if p.startswith("chapters/")]
    if chapters:
        assert (ROOT / "_build" / ".jupyter_cache").is_dir(), (
            "the instructor's book has not been built: run `make book` (make test does it first)")
    executed = [line for line in built.splitlines() if "Executing notebook" in line]
    assert not executed, ("chapters ran again in the edition: the instructor's execution cache is stale "
                          "(run `make book`) or the rewrite broke its keys:\n" + "\n".join(executed))
    notebooks = [p for p in chapters if p.endswith(".ipynb") or "kernelspec:" in (edition / p).read_text()[:3000]]
    cached = [line for line in built.splitlines() if "Using cached notebook" in line]
    assert len(cached) == len(notebooks), (
        f"{len(notebooks)} executable chapters, {len(cached)} cache hits:\n" + "\n".join(cached))
    html = edition / "_build" / "html"
    assert (html / "index.html").is_file()
    leaks = find_leaks(edition / "_build", secret_lines(ROOT))
    assert not leaks, f"solution or hidden-test lines in the edition's built book: {leaks[:10]}"
    if OLD_URL != STUDENT_URL:
        holders = [p.relative_to(html).as_posix() for p in _files(html, skip_build=False)
                   if OLD_URL in p.read_bytes().decode("utf-8", errors="replace")]
        assert not holders, f"the built book still points at the instructor repository: {holders}"
    for page in chapters:
        text = (html / Path(page).with_suffix(".html")).read_text()
        assert "https://colab.research.google.com/github/example-org/llm-course-student/blob/" in text, page


def test_the_edition_imports_its_own_package(edition):
    done = subprocess.run([sys.executable, "-c", "import course_utils; print(course_utils.__file__)"],
                          cwd=edition, env=_env(edition), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == (edition / "course_utils" / "__init__.py").resolve(), done.stdout


def test_the_edition_test_suite_passes_on_its_own(edition, built):
    check = ("import sys, course_utils, pytest; "
             f"assert course_utils.__file__ == {str(edition / 'course_utils' / '__init__.py')!r}, course_utils.__file__; "
             f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *{EDITION_XDIST!r}, 'tests']))")
    done = subprocess.run([sys.executable, "-c", check], cwd=edition, env=_env(edition),
                          capture_output=True, text=True, timeout=SUITE_TIMEOUT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert re.search(r"\d+ passed", done.stdout) and " failed" not in done.stdout, done.stdout[-2000:]
    # Nothing may be skipped, except the browser tests on a machine without Chromium outside CI
    # (tests/test_site.py skips them there with one line; where CI is set they are required), and
    # the prose snapshot's rebuild where the interpreter it was read from is not installed.
    no_browser = (not os.access(os.environ.get("CHROMIUM", "/usr/bin/chromium"), os.X_OK)
                  and os.environ.get("CI", "").lower() not in ("1", "true", "yes"))
    skipped = re.findall(r"^SKIPPED \[\d+\] (.+)$", done.stdout, re.M)
    unexpected = [line for line in skipped if not (no_browser and "browser tests skipped" in line)
                  and "no such interpreter is on this machine" not in line]
    assert not unexpected, done.stdout[-2000:]


def test_the_command_refuses_to_run_without_the_student_address(tmp_path):
    with pytest.raises(ValueError, match="repo_url is required"):
        make_edition(tmp_path / "new", ROOT)
    usage = "usage: course-student-edition DEST --repo-url https://github.com/ORG/REPO"
    command = Path(sys.executable).with_name("course-student-edition")
    done = subprocess.run([str(command), str(tmp_path / "new")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.startswith(usage) and done.stderr.count("\n") == 1, done.stderr
    done = subprocess.run(["make", "--no-print-directory", "student-edition", f"DEST={tmp_path / 'new'}", f"VENV={VENV}", "-o", str(STAMP)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0, done.stdout + done.stderr
    assert done.stdout.startswith("usage: make student-edition DEST=") and done.stdout.count("\n") == 1, done.stdout
    assert not (tmp_path / "new").exists()


def test_the_address_rewrite_keeps_pinned_versions_and_other_repositories():
    cell = '%pip install -q "course_utils @ git+https://github.com/a/course@v0.2.0"  # https://github.com/a/course-x'
    assert rewrite_url(cell, "https://github.com/a/course", "https://github.com/b/student") == (
        '%pip install -q "course_utils @ git+https://github.com/b/student@v0.2.0"  # https://github.com/a/course-x')


def test_the_command_refuses_unsafe_destinations(tmp_path):
    with pytest.raises(ValueError, match="outside the instructor repository"):
        make_edition(ROOT / "student", ROOT, repo_url=STUDENT_URL)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and not a git clone"):
        make_edition(busy, ROOT, repo_url=STUDENT_URL)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="repo_url must look like"):
        make_edition(tmp_path / "new", ROOT, repo_url="github.com/no-scheme")


def test_a_clone_of_the_student_repository_is_updated_in_place(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    (clone / "stale.md").write_text("from an older edition")
    (clone / ".github" / "workflows").mkdir(parents=True)
    (clone / ".github" / "workflows" / "pages.yml").write_text("name: pages\n")
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "old edition"], check=True)
    make_edition(clone, ROOT, repo_url=STUDENT_URL, copy_cache=False)
    assert not (clone / "stale.md").exists()
    assert (clone / ".github" / "workflows" / "pages.yml").read_text() == "name: pages\n"
    assert (clone / ".git").is_dir() and (clone / "_config.yml").is_file() and (clone / "labs").is_dir()
    (clone / "uncommitted.txt").write_text("work in progress")
    with pytest.raises(ValueError, match="uncommitted changes"):
        make_edition(clone, ROOT, repo_url=STUDENT_URL, copy_cache=False)
    assert (clone / "uncommitted.txt").exists()


def test_the_cache_copy_drops_records_of_old_and_missing_notebooks(tmp_path):
    """A chapter edited since it was cached leaves its old record behind; the edition must not carry it
    (it may hold code that has since moved into a lab's solution)."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    root, edition = tmp_path / "course", tmp_path / "edition"
    (root / "chapters").mkdir(parents=True)
    chapter = root / "chapters" / "ch.md"
    head = "---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n  name: python3\n---\n\n"
    chapter.write_text(head + "# A chapter\n\n```{code-cell} ipython3\nprint('now')\n```\n", encoding="utf-8")

    def notebook(code: str):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A chapter"),
                                             nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        return nb

    src = tmp_path / "cache"
    cache = get_cache(src)
    for code, uri in (("print('old solution code')", chapter), ("print('now')", chapter),
                      ("print('gone')", root / "chapters" / "deleted.md"), ("print('elsewhere')", tmp_path / "x.md")):
        cache.cache_notebook_bundle(CacheBundleIn(notebook(code), str(uri)), check_validity=False, overwrite=True)
    kept = copy_execution_cache(src, edition / "cache", {OLD_URL: STUDENT_URL}, root, edition)
    copied = get_cache(edition / "cache")
    records = {r.uri: [c.source for c in copied.get_cache_bundle(r.pk).nb.cells if c.cell_type == "code"][0]
               for r in copied.list_cache_records()}
    assert kept == 2
    assert records == {str(edition / "chapters" / "ch.md"): "print('now')", str(tmp_path / "x.md"): "print('elsewhere')"}
    assert len(get_cache(src).list_cache_records()) == 4  # the source cache is untouched
