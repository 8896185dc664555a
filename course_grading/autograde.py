"""Lab tooling for instructors: generate the student versions and grade submissions.

The labs are nbgrader notebooks. Instructor sources live in
``solutions/<lab>/<lab>.ipynb``; :func:`generate` runs ``nbgrader
generate_assignment`` to write the student versions to ``labs/``.
:func:`autograde` grades submissions with nbgrader's own preprocessors, but
runs each student's kernel in a jail (:mod:`course_utils.sandbox`) and judges
each test cell by a secret it alone can print, so that grades cannot be forged
from inside a notebook. See ``instructors.md`` for the whole workflow.

Command line (from the repository root)::

    python -m course_utils.grading generate            # every lab
    python -m course_utils.grading generate lab02_attention
    python -m course_utils.grading parts lab02_attention   # graded parts and points
    python -m course_utils.grading autograde lab02_attention [--submissions DIR]
        [--jobs N] [--timeout S] [--cell-timeout S] [--memory MB] [--unsandboxed]
    python -m course_utils.grading check-release       # labs/ and _build/html leak nothing

How a submission is graded (one worker process per ``--jobs`` slot):

1. *Repair* (:func:`repair`): the notebook is matched back to the release
   version by nbgrader ids, or, where those were lost, by the functions its
   cells define and by text similarity; duplicated ids are made unique, the
   release order restored and deleted test cells re-inserted.
2. *nbgrader autograde* in a throwaway course holding this one submission and
   a copy of the gradebook with the assignment but no students: nbgrader
   restores the test cells and points from it, as usual.
3. *Execution in the jail* (``SandboxedExecute`` in :mod:`course_utils.sandbox`): the kernel sees the
   interpreter, the course package and a scratch copy of this submission
   only; no network; a memory limit, a per-cell and a per-notebook time limit.
   Every test cell gets a last line printing a fresh random nonce; a test cell
   earns its points only if that nonce was printed and the cell raised no
   error and wrote nothing to stderr (nbgrader's rule), so a kernel that hides
   its tracebacks scores nothing.
4. The grades are copied from the throwaway gradebook into the real one by
   the parent process, one submission at a time; feedback is generated and a
   CSV written to ``grades/<lab>.csv``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import difflib
import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from course_utils import sandbox

__all__ = ["find_root", "list_labs", "generate", "graded_parts", "Part", "nbgrader_command",
           "repair", "load_submission", "SubmissionError", "suspicious", "autograde", "Outcome",
           "check_release", "SandboxUnavailable"]

LAB_NAME = re.compile(r"^lab\d\d_[a-z0-9_]+$")
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
MAX_NOTEBOOK_MB = 50


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The course root: the nearest folder at or above ``start`` holding ``nbgrader_config.py``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").is_file():
            return folder
    raise FileNotFoundError(f"no nbgrader_config.py at or above {here}; run this from the course repository")


def list_labs(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the labs in ``solutions/``, e.g. ``['lab01_next_word', 'lab02_attention']``."""
    solutions = find_root(root) / "solutions"
    return sorted(p.name for p in solutions.iterdir() if p.is_dir() and LAB_NAME.match(p.name))


def nbgrader_command() -> list[str]:
    """How to call nbgrader with this interpreter (its ``bin/`` must be on PATH for alembic)."""
    return [sys.executable, "-m", "nbgrader"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def generate(labs: list[str] | None = None, root: str | os.PathLike | None = None,
             dest: str | os.PathLike | None = None) -> Path:
    """Write the student version of each lab with ``nbgrader generate_assignment``.

    Args:
        labs: lab names (default: every lab in ``solutions/``).
        root: the course root (default: found from the current folder).
        dest: write into this folder's ``labs/`` instead of the repository's
            (used by CI to compare a fresh generation with the committed one).

    Returns the ``labs/`` folder written.
    """
    root = find_root(root)
    known = list_labs(root)
    labs = known if labs is None else labs
    unknown = [lab for lab in labs if lab not in known]
    if unknown:
        raise ValueError(f"unknown labs {unknown}; the labs in solutions/ are {known}")
    course = Path(dest).resolve() if dest else root
    if dest:
        course.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "nbgrader_config.py", course / "nbgrader_config.py")
        for lab in labs:
            shutil.copytree(root / "solutions" / lab, course / "solutions" / lab, dirs_exist_ok=True)
    for lab in labs:
        cmd = nbgrader_command() + ["generate_assignment", lab, "--force", "--no-db",
                                    f"--CourseDirectory.root={course}", "--log-level=WARN"]
        done = subprocess.run(cmd, cwd=course, env=_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{done.stdout}\n{done.stderr}")
        for nb in (course / "labs" / lab).glob("*.ipynb"):
            _check_release(nb)
    return course / "labs"


def _check_release(path: Path) -> None:
    text = path.read_text()
    for marker in MARKERS:
        if marker in text:
            raise RuntimeError(f"{path} still contains {marker!r}: a misspelt marker would leak solutions")


@dataclass
class Part:
    """One graded part of a lab: the solution cells a student fills in and the
    test cells that grade them."""

    index: int
    solution_ids: list[str] = field(default_factory=list)
    test_ids: list[str] = field(default_factory=list)
    points: float = 0.0


def graded_parts(notebook: str | os.PathLike | dict) -> list[Part]:
    """Split a lab into parts: each run of solution cells followed by the test
    cells after it. ``notebook`` is a path or a loaded notebook dict."""
    nb = notebook if isinstance(notebook, dict) else json.loads(Path(notebook).read_text())
    parts: list[Part] = []
    current: Part | None = None
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and not meta.get("grade"):
            if current is None or current.test_ids:
                current = Part(index=len(parts) + 1)
                parts.append(current)
            current.solution_ids.append(meta["grade_id"])
        elif meta.get("grade") and cell["cell_type"] == "code":
            if current is None:
                raise ValueError(f"test cell {meta.get('grade_id')!r} comes before any solution cell")
            current.test_ids.append(meta["grade_id"])
            current.points += float(meta.get("points", 0))
    return [p for p in parts if p.test_ids]


# ---------------------------------------------------------------------------
# Repair: match a damaged submission back to the release notebook
# ---------------------------------------------------------------------------


class SubmissionError(ValueError):
    """A submission that cannot be graded at all (its reason is the message)."""


def load_submission(path: str | os.PathLike) -> dict:
    """Read a submitted notebook as a plain dict (nbformat 4), or raise
    :class:`SubmissionError` saying why it cannot be read."""
    path = Path(path)
    if path.stat().st_size > MAX_NOTEBOOK_MB * 2**20:
        raise SubmissionError(f"notebook larger than {MAX_NOTEBOOK_MB} MB")
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise SubmissionError(f"invalid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells", raw.get("worksheets")), list):
        raise SubmissionError("not a notebook: no list of cells")
    import nbformat

    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as e:  # noqa: BLE001 - nbformat raises many kinds
        raise SubmissionError(f"not a readable notebook: {type(e).__name__}: {e}") from None
    cells = []
    for cell in nb.cells:
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        src = cell.get("source", "")
        cells.append({"cell_type": cell["cell_type"], "metadata": dict(cell.get("metadata") or {}),
                      "source": "".join(src) if isinstance(src, list) else str(src)})
    return {"cells": cells, "metadata": dict(nb.get("metadata") or {})}


def _meta(cell: dict) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _kind(cell: dict) -> str:
    """'solution', 'test', 'locked' or '' (an ordinary cell) for a release cell."""
    meta = _meta(cell)
    if meta.get("solution"):
        return "solution"
    if meta.get("grade") and cell["cell_type"] == "code":
        return "test"
    return "locked" if meta.get("locked") or meta.get("grade") or meta.get("task") else ""


def _defined_names(source: str) -> set[str]:
    """Top-level functions, classes and variables a cell defines,
    e.g. ``'def f(x):\\n  return x\\nN = 3'`` -> ``{'f', 'N'}``."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set(re.findall(r"^(?:async\s+def|def|class)\s+(\w+)", source, flags=re.M))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _similarity(a: str, b: str) -> float:
    """Similarity of two cells' text in [0, 1], ignoring blank lines and indentation."""
    norm = lambda s: [line.strip() for line in s.splitlines() if line.strip()]  # noqa: E731
    return difflib.SequenceMatcher(None, norm(a), norm(b), autojunk=False).ratio()


def repair(submission: dict, release: dict) -> tuple[dict, list[str]]:
    """Match a submission's cells to the release notebook and rebuild it in release order.

    Cells are matched by nbgrader ``grade_id``; cells whose metadata was lost
    are matched by the functions they define (solution cells) or by text
    similarity (read-only and test cells). Matched cells get the release's
    nbgrader metadata (so raised ``points`` are reset) and read-only cells the
    release's text; a solution cell keeps the student's code. Duplicated ids
    (duplicated or split cells) stay as ordinary cells after the first; cells
    the student added stay just before the graded cell they preceded (helpers
    before their users); missing test and read-only cells are re-inserted.

    Returns ``(notebook, notes)``; ``notes`` says what was repaired (empty if nothing).
    """
    rel_cells = [c for c in release["cells"] if _kind(c)]
    by_id = {_meta(c)["grade_id"]: r for r, c in enumerate(rel_cells)}
    sub_cells = submission["cells"]
    match: dict[int, int] = {}  # release index -> submission index
    role: dict[int, int] = {}  # submission index -> release index
    notes: list[str] = []
    dup: dict[str, int] = {}
    copies: dict[int, list[int]] = {}  # release index -> later cells with the same id

    for j, cell in enumerate(sub_cells):  # 1. by grade_id
        r = by_id.get(_meta(cell).get("grade_id"))
        if r is None or rel_cells[r]["cell_type"] != cell["cell_type"]:
            continue
        if r in match:
            dup[_meta(cell)["grade_id"]] = dup.get(_meta(cell)["grade_id"], 1) + 1
            copies.setdefault(r, []).append(j)
        else:
            match[r], role[j] = j, r
    lost = [j for j, c in enumerate(sub_cells) if j not in role and _meta(c).get("grade_id") not in dup]
    n_by_content = 0
    for j in lost:  # 2. by what the cell defines, then by text similarity
        cell, src = sub_cells[j], _source(sub_cells[j])
        free = [r for r in range(len(rel_cells)) if r not in match and rel_cells[r]["cell_type"] == cell["cell_type"]]
        best, score = None, 0.0
        names = _defined_names(src) if cell["cell_type"] == "code" else set()
        for r in free:  # a solution cell is recognised by the functions it defines
            rel_names = _defined_names(_source(rel_cells[r])) if _kind(rel_cells[r]) == "solution" else set()
            overlap = len(names & rel_names) / max(len(rel_names), 1)
            if overlap > score:
                best, score = r, overlap
        if best is None:  # anything else by its text
            score = 0.6
            for r in free:
                if _kind(rel_cells[r]) == "solution" and _defined_names(_source(rel_cells[r])):
                    continue  # those are recognised by their names only
                sim = _similarity(src, _source(rel_cells[r]))
                if sim >= score:
                    best, score = r, sim + 1e-9
        if best is not None:
            match[best], role[j] = j, best
            n_by_content += 1
    if n_by_content:
        notes.append(f"nbgrader metadata missing on {n_by_content} cells: matched them to the release by content")
    for gid, n in dup.items():
        notes.append(f"{n} cells carry the id '{gid}' (duplicated or split): the first is graded, the rest run as ordinary cells")

    order = [role[j] for j in sorted(role)]
    if order != sorted(order):
        notes.append("cells were reordered: restored the release order")
    before: dict[int, list[int]] = {}  # the student's own cells go just before the graded cell they preceded
    pending: list[int] = []
    copied = {j for js in copies.values() for j in js}
    for j in range(len(sub_cells)):
        if j in role:
            before[role[j]], pending = pending, []
        elif j not in copied:
            pending.append(j)

    def plain(j: int) -> dict:
        cell = {"cell_type": sub_cells[j]["cell_type"], "metadata": {}, "source": _source(sub_cells[j])}
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
        return cell

    defined_elsewhere = set()
    for j, cell in enumerate(sub_cells):
        if cell["cell_type"] == "code":
            defined_elsewhere |= _defined_names(_source(cell))
    out = []
    for r, rel in enumerate(rel_cells):
        out.extend(plain(j) for j in before.get(r, []))
        kind, gid = _kind(rel), _meta(rel)["grade_id"]
        cell = copy.deepcopy(rel)
        if r in match:
            sub = sub_cells[match[r]]
            sub_meta = _meta(sub)
            if kind == "solution":
                cell["source"] = _source(sub)
            elif _source(sub).strip() != _source(rel).strip() and (sub_meta or kind == "test"):
                notes.append(f"{'test' if kind == 'test' else 'read-only'} cell '{gid}' was edited: restored")
            if sub_meta and "points" in _meta(rel) and sub_meta.get("points") != _meta(rel)["points"]:
                notes.append(f"points of '{gid}' changed to {sub_meta.get('points')!r}: reset to {_meta(rel)['points']}")
        elif kind == "test":
            notes.append(f"test cell '{gid}' was missing: re-inserted")
        elif kind == "solution":
            if _defined_names(_source(rel)) & defined_elsewhere:
                cell["source"] = "# (this cell's code is in another cell of the submission)\n"
                notes.append(f"solution cell '{gid}' was merged into another cell")
            else:
                notes.append(f"solution cell '{gid}' was missing: inserted the empty template")
        elif rel["cell_type"] == "code":
            notes.append(f"read-only cell '{gid}' was missing: re-inserted")
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
        out.append(cell)
        out.extend(plain(j) for j in copies.get(r, []))  # duplicated or split: right after the graded copy
    out.extend(plain(j) for j in pending)
    nb = {"cells": out, "metadata": copy.deepcopy(release.get("metadata", {})),
          "nbformat": 4, "nbformat_minor": release.get("nbformat_minor", 5)}
    if nb["nbformat_minor"] >= 5:
        for i, cell in enumerate(out):
            cell["id"] = f"cell-{i:03d}"
    return nb, notes


# Patterns worth a human look: they change no score (the jail and the nonce do the work).
SUSPICIOUS = {
    "network access": r"\bsocket\b|urllib|requests\.|http\.client|urlopen",
    "the gradebook": r"gradebook|sqlite3",
    "files outside the submission": r"""(open|Path|listdir|scandir|glob|read_text|read_bytes)\s*\(\s*[rbf]?['"](/|~|\.\./)|expanduser|os\.walk\s*\(\s*['"]/""",
    "kernel or output tampering": r"get_ipython|showtraceback|excepthook|input_transformers|sys\.std(out|err)\s*=|__builtins__|\bbuiltins\b",
    "comparison patching": r"\.(allclose|array_equal|equal|isclose|assert_close|assert_allclose)\s*=|__eq__|__ne__",
    "process control": r"os\._exit|os\.kill|os\.fork|subprocess|signal\.|multiprocessing|sys\.exit",
    "dynamic code": r"\bexec\s*\(|\beval\s*\(|\bcompile\s*\(|__import__",
}


def suspicious(nb: dict) -> list[str]:
    """What the student-written code of a (repaired) notebook does that deserves
    a look, e.g. ``['the gradebook', 'network access']``. Read-only cells are skipped."""
    code = "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "code" and _kind(c) in ("solution", ""))
    return [name for name, pattern in SUSPICIOUS.items() if re.search(pattern, code)]


# ---------------------------------------------------------------------------
# Autograde: many submissions, in parallel, into one gradebook
# ---------------------------------------------------------------------------


class SandboxUnavailable(RuntimeError):
    """The jail cannot run here and grading unsandboxed was not asked for."""


@dataclass
class Outcome:
    """What happened to one submission.

    ``status`` is ``'graded'`` or ``'not graded'``; ``problems`` names what went
    wrong while running it (timeout, memory, kernel died, tampering),
    ``repairs`` what :func:`repair` fixed, ``flags`` what :func:`suspicious` saw.
    """

    student: str
    status: str = "not graded"
    score: float | None = None
    max_score: float | None = None
    reason: str = ""
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    cells: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the report, e.g. ``'alice: 12/12 graded; repaired: …'``."""
        score = "-" if self.score is None else f"{self.score:g}/{self.max_score:g}"
        parts = [f"{self.student}: {score} {self.status}"]
        if self.reason:
            parts.append(self.reason)
        for label, items in (("problems", self.problems), ("repaired", self.repairs), ("flagged", self.flags)):
            if items:
                parts.append(f"{label}: " + "; ".join(items))
        return " | ".join(parts)


def _course_config(root: Path):
    """The course's nbgrader configuration (nbgrader_config.py)."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()


def _notebook_names(db: Path, lab: str) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT notebook.name FROM notebook JOIN assignment ON notebook.assignment_id = "
                           "assignment.id WHERE assignment.name = ?", (lab,)).fetchall()
    return sorted(r[0] for r in rows)


def _ensure_assignment(root: Path, lab: str, db: Path, work: Path) -> Path:
    """Make sure the gradebook knows ``lab`` (running ``generate_assignment`` in a
    temporary course if not) and return the folder of its release notebooks."""
    if not db.exists() or not _notebook_names(db, lab):
        tmp = work / "release"
        tmp.mkdir()
        cmd = nbgrader_command() + ["generate_assignment", lab, "--force", f"--CourseDirectory.root={tmp}",
                                    f"--CourseDirectory.db_url=sqlite:///{db}", "--log-level=WARN"]
        shutil.copy(root / "nbgrader_config.py", tmp / "nbgrader_config.py")
        source = _course_config(root).CourseDirectory.get("source_directory", "source")
        shutil.copytree(root / source / lab, tmp / source / lab)
        done = subprocess.run(cmd, cwd=tmp, env=_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{done.stdout}\n{done.stderr}")
        release = _course_config(root).CourseDirectory.get("release_directory", "release")
        return tmp / release / lab
    release = _course_config(root).CourseDirectory.get("release_directory", "release")
    if (root / release / lab).is_dir():
        return root / release / lab
    return generate([lab], root, dest=work / "release") / lab


def _template_gradebook(db: Path, target: Path) -> None:
    """Copy the gradebook without any student: what each throwaway course starts from."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
        for table in ("grade", "comment", "submitted_notebook", "submitted_assignment", "student"):
            dst.execute(f"DELETE FROM {table}")


def _find_notebook(folder: Path, name: str) -> tuple[Path | None, str]:
    """The submitted notebook ``name``, or the only notebook there under another name."""
    exact = folder / f"{name}.ipynb"
    if exact.is_file() and not exact.is_symlink():
        return exact, ""
    others = [p for p in sorted(folder.glob("*.ipynb")) if p.is_file() and not p.is_symlink()]
    if len(others) == 1:
        return others[0], f"notebook was named '{others[0].name}': graded as {name}.ipynb"
    return None, f"no {name}.ipynb in the submission" + (f" (found {[p.name for p in others]})" if others else "")


_SLOT = None


def _init_worker(counter) -> None:
    """Give each worker process its own slot (its jail uid)."""
    global _SLOT
    with counter.get_lock():
        _SLOT = counter.value
        counter.value += 1


def _grade_one(task: dict) -> dict:
    """Grade one submission in a throwaway course (runs in a worker process).

    ``task`` holds plain paths and settings; the result is an :class:`Outcome`
    as a dict plus the throwaway course's path for the parent to merge.
    """
    started = time.monotonic()
    warnings.filterwarnings("ignore", message=".*not in session.*")  # nbgrader's own SQLAlchemy noise
    out = Outcome(student=task["student"])
    course, lab = Path(task["course"]), task["lab"]
    try:
        course.mkdir(parents=True)
        shutil.copy(task["template_db"], course / "gradebook.db")
        release = Path(task["release"])
        dest = course / "submitted" / out.student / lab
        dest.mkdir(parents=True)
        source_dir = Path(task["submission"])
        for folder, _, files in os.walk(source_dir):  # the student's other files: regular files only
            for name in files:
                path = Path(folder, name)
                if path.is_symlink() or not path.is_file() or path.suffix == ".ipynb":
                    continue
                if path.stat().st_size > MAX_NOTEBOOK_MB * 2**20:
                    out.repairs.append(f"skipped {path.name}: larger than {MAX_NOTEBOOK_MB} MB")
                    continue
                target = dest / path.relative_to(source_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        nbs = {}
        for name in task["notebooks"]:
            found, note = _find_notebook(source_dir, name)
            if found is None:
                out.reason = note
                return {**asdict(out), "seconds": time.monotonic() - started}
            if note:
                out.repairs.append(note)
            release_nb = json.loads((release / f"{name}.ipynb").read_text())
            fixed, notes = repair(load_submission(found), release_nb)
            out.repairs += notes
            out.flags += [f for f in suspicious(fixed) if f not in out.flags]
            nbs[name] = fixed
        for name, nb in nbs.items():
            (dest / f"{name}.ipynb").write_text(json.dumps(nb))
    except SubmissionError as e:
        out.reason = str(e)
        return {**asdict(out), "seconds": time.monotonic() - started}

    classes = sandbox.jupyter_classes()
    from nbgrader.apps import NbGraderAPI
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import Execute

    cfg = _course_config(Path(task["root"]))
    cfg.CourseDirectory.root = str(course)
    cfg.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    cfg.CourseDirectory.submitted_directory = "submitted"
    cfg.CourseDirectory.autograded_directory = "autograded"
    steps = list(cfg.Autograde.get("autograde_preprocessors", Autograde.class_traits()["autograde_preprocessors"].default()))
    cfg.Autograde.autograde_preprocessors = [
        classes["SandboxedExecute"] if isinstance(p, type) and issubclass(p, Execute) else p for p in steps]
    per_cell = cfg.Execute.get("timeout") or cfg.ExecutePreprocessor.get("timeout") or task["timeout"]
    scratch, control = course.parent / "job", course.parent / "ctl"
    scratch.mkdir()
    control.mkdir(mode=0o700)
    cfg.SandboxedExecute.update(
        timeout=int(min(task["cell_timeout"] or per_cell, task["timeout"])), notebook_timeout=task["timeout"],
        sandbox=task["sandbox"], memory_mb=task["memory_mb"], scratch=str(scratch), control=str(control),
        uid=62000 + (_SLOT or 0), threads=task["threads"], run_all=task["run_all"])
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    result = api.autograde(lab, out.student, force=True, create=True)
    try:
        report = json.loads((control / "execution.json").read_text())
    except (OSError, ValueError):
        report = {"problems": []}
    out.problems = report["problems"]
    if not result.get("success"):
        error = (result.get("error") or "").strip().splitlines()
        out.reason = "nbgrader autograde failed: " + (error[-1] if error else "see its log")
        return {**asdict(out), "seconds": time.monotonic() - started, "log": result.get("log", "")}
    feedback = api.generate_feedback(lab, out.student, force=True) if task["feedback"] else {"success": True}
    if not feedback.get("success"):
        out.problems.append("nbgrader generate_feedback failed")
    out.status = "graded"
    return {**asdict(out), "seconds": time.monotonic() - started, "course": str(course)}


def _merge(result: dict, db: Path, lab: str, root: Path) -> None:
    """Copy one student's grades from the throwaway gradebook into the real one (parent only)."""
    from nbgrader.api import Gradebook

    warnings.filterwarnings("ignore", message=".*not in session.*")
    course = Path(result["course"])
    student = result["student"]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as tmp, Gradebook(f"sqlite:///{db}") as gb:
        graded = tmp.find_submission(lab, student)
        gb.update_or_create_student(student)
        timestamp = graded.timestamp.isoformat() if graded.timestamp else None
        gb.update_or_create_submission(lab, student, **({"timestamp": timestamp} if timestamp else {}))
        for nb in graded.notebooks:
            real_nb = gb.find_submission_notebook(nb.name, lab, student)
            real_nb.late_submission_penalty = nb.late_submission_penalty
            for grade in nb.grades:
                real = gb.find_grade(grade.name, nb.name, lab, student)
                real.auto_score = grade.auto_score
                real.needs_manual_grade = real.manual_score is not None or grade.auto_score is None
            for comment in nb.comments:
                gb.find_comment(comment.name, nb.name, lab, student).auto_comment = comment.auto_comment
        gb.db.commit()
        sub = gb.find_submission(lab, student)
        result["score"], result["max_score"] = sub.score, sub.max_score
        result["cells"] = {g.name: g.score for n in sub.notebooks for g in n.grades}
    config = _course_config(root).CourseDirectory
    for kind in ("autograded", "feedback"):
        made = course / kind / student / lab
        target = root / config.get(f"{kind}_directory", kind) / student / lab
        if made.is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(made, target)


def autograde(lab: str, submissions: str | os.PathLike | None = None, root: str | os.PathLike | None = None, *,
              jobs: int = 2, timeout: float = 600, cell_timeout: float | None = None, memory_mb: int = 4096,
              sandbox_required: bool = True, run_all: bool = False, students: list[str] | None = None,
              feedback: bool = True, progress: bool = True) -> list[Outcome]:
    """Grade every submission of ``lab`` into the course's gradebook.

    Args:
        lab: the assignment, e.g. ``"lab02_attention"``.
        submissions: folder holding ``<student>/<lab>/<notebook>.ipynb`` (default:
            the course's ``submitted/``).
        root: the course root (default: found from the current folder).
        jobs: submissions graded at once.
        timeout: wall-clock limit per notebook, seconds (the kernel is killed).
        cell_timeout: per-cell limit, seconds, after which the cell is
            interrupted (default: ``ExecutePreprocessor.timeout`` of the config).
        memory_mb: memory limit of each kernel, MiB (``RLIMIT_DATA``).
        sandbox_required: refuse to run without the jail (``False`` grades
            unsandboxed: student code then runs with your rights).
        run_all: also run the cells after the last test cell.
        students: grade only these students.
        feedback: run ``nbgrader generate_feedback`` afterwards.

    Returns one :class:`Outcome` per submission; ``grades/<lab>.csv`` and
    ``grades/<lab>.json`` are written under the course root.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if timeout <= 0 or (cell_timeout is not None and cell_timeout <= 0):
        raise ValueError(f"timeout and cell_timeout must be positive, got {timeout} and {cell_timeout}")
    if memory_mb < 256:
        raise ValueError(f"memory_mb must be at least 256 (a kernel needs that much), got {memory_mb}")
    root = find_root(root)
    jailed, why = sandbox.available()
    if not jailed and sandbox_required:
        raise SandboxUnavailable(f"cannot sandbox student code here: {why}. Re-run with --unsandboxed to grade "
                                 "anyway; student code then runs with your rights and can read the gradebook.")
    config = _course_config(root)
    submitted = Path(submissions) if submissions else root / config.CourseDirectory.get("submitted_directory",
                                                                                        "submitted")
    db = root / "gradebook.db"
    work = Path(tempfile.mkdtemp(prefix="grade-"))
    outcomes: list[Outcome] = []
    try:
        release = _ensure_assignment(root, lab, db, work)
        notebooks = _notebook_names(db, lab)
        _template_gradebook(db, work / "template.db")
        tasks = []
        for folder in sorted(p for p in submitted.iterdir() if p.is_dir()):
            if students is not None and folder.name not in students:
                continue
            if not STUDENT_ID.match(folder.name):
                outcomes.append(Outcome(folder.name, reason="student id with unexpected characters: not graded"))
                continue
            if not (folder / lab).is_dir():
                continue
            tasks.append(dict(student=folder.name, lab=lab, root=str(root), submission=str(folder / lab),
                              course=str(work / f"t{len(tasks):04d}" / "course"), template_db=str(work / "template.db"),
                              release=str(release), notebooks=notebooks, timeout=timeout, cell_timeout=cell_timeout,
                              memory_mb=memory_mb, sandbox=jailed, run_all=run_all, feedback=feedback,
                              threads=max(1, (os.cpu_count() or 1) // jobs)))
        if not jailed:
            print(f"WARNING: grading UNSANDBOXED ({why}): student code runs with your rights.", file=sys.stderr)
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(ctx.Value("i", 0),)) as pool:
            futures = {pool.submit(_grade_one, task): task for task in tasks}
            for future in tqdm(as_completed(futures), total=len(futures), desc=f"grading {lab}", disable=not progress):
                task = futures[future]
                try:
                    result = future.result()
                    if result["status"] == "graded":
                        _merge(result, db, lab, root)  # one at a time: the parent alone writes grades
                except Exception as e:  # noqa: BLE001 - record it, grade the others
                    result = asdict(Outcome(task["student"], reason=f"grader error: {type(e).__name__}: {e}"))
                result.pop("course", None)
                result.pop("log", None)
                outcomes.append(Outcome(**result))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    outcomes.sort(key=lambda o: o.student)
    _write_grades(root, lab, outcomes, sandboxed=jailed)
    return outcomes


def _write_grades(root: Path, lab: str, outcomes: list[Outcome], sandboxed: bool) -> None:
    folder = root / "grades"
    folder.mkdir(exist_ok=True)
    cells = sorted({c for o in outcomes for c in o.cells})
    with open(folder / f"{lab}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "status", "score", "max_score", *cells, "reason", "problems", "repairs", "flags"])
        for o in outcomes:
            w.writerow([o.student, o.status, "" if o.score is None else o.score, "" if o.max_score is None
                        else o.max_score, *[o.cells.get(c, "") for c in cells], o.reason, "; ".join(o.problems),
                        "; ".join(o.repairs), "; ".join(o.flags)])
    report = {"lab": lab, "sandboxed": sandboxed, "outcomes": [asdict(o) for o in outcomes]}
    (folder / f"{lab}.json").write_text(json.dumps(report, indent=1))


# ---------------------------------------------------------------------------
# Release check: nothing secret in labs/ or in the built book
# ---------------------------------------------------------------------------

TEXT_SUFFIXES = {".html", ".htm", ".ipynb", ".md", ".txt", ".py", ".json", ".js", ".tex", ".rst", ""}
MIN_SECRET_CHARS = 16  # shorter lines (`return x`, `pass`) also occur in honest code


def _secret_and_public(nb: dict) -> tuple[set[str], set[str]]:
    """Stripped lines between solution or hidden-test markers, and the lines outside them."""
    secret, public = set(), set()
    for cell in nb["cells"]:
        inside = False
        for line in _source(cell).splitlines():
            s = line.strip()
            if s in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
                inside = True
            elif s in ("### END SOLUTION", "### END HIDDEN TESTS"):
                inside = False
            elif s:
                (secret if inside else public).add(s)
    return secret, public


def _visible_lines(path: Path) -> set[str]:
    text = path.read_text(errors="replace")
    if path.suffix == ".ipynb":
        try:
            text = "\n".join(_source(c) for c in json.loads(text)["cells"])
        except (ValueError, KeyError, TypeError):
            pass
    elif path.suffix in (".html", ".htm"):
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return {line.strip() for line in text.splitlines() if line.strip()}


def _authored_lines(root: Path, skip: set[str]) -> set[str]:
    """Lines of the files the book and package are written in (chapters, course_utils, ...):
    code a chapter shows on purpose is not a leak, even when a solution repeats it."""
    lines: set[str] = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in skip]
        for name in files:
            path = Path(folder, name)
            if path.suffix in (".md", ".ipynb", ".py", ".txt", ".rst") and path.stat().st_size < 5 * 2**20:
                lines |= _visible_lines(path)
    return lines


def check_release(root: str | os.PathLike | None = None) -> list[str]:
    """Places where ``labs/`` or the built book (``_build/html``, if built) show
    solution code or hidden tests: a marker, or a line that appears inside
    ``### BEGIN SOLUTION``/``### BEGIN HIDDEN TESTS`` blocks of a source notebook
    and nowhere else in what the course is written in (the chapters, the package).

    Returns a list of findings such as ``"labs/lab02_attention/lab02_attention.ipynb:
    solution line 'scores = q @ k.transpose(-2, -1)'"``; empty when the release is clean.
    """
    root = find_root(root)
    config = _course_config(root).CourseDirectory
    source = root / config.get("source_directory", "source")
    release = root / config.get("release_directory", "release")
    secret, public = set(), set()
    for lab in list_labs(root):
        for nb in (source / lab).glob("*.ipynb"):
            s, p = _secret_and_public(json.loads(nb.read_text()))
            secret, public = secret | s, public | p
    secret = {s for s in secret - public if len(s.replace(" ", "")) >= MIN_SECRET_CHARS and not s.startswith("#")}
    skip = {source.name, release.name, "_build", "tests", "benchmarks", "submitted", "autograded", "feedback",
            "grades", "node_modules", "__pycache__"}
    secret -= _authored_lines(root, skip)
    findings = []
    for top in (release, root / "_build" / "html"):
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in TEXT_SUFFIXES or path.stat().st_size > 20 * 2**20:
                continue
            rel = path.relative_to(root)
            raw = path.read_text(errors="replace")
            for marker in MARKERS:
                if marker in raw:
                    findings.append(f"{rel}: contains {marker!r}")
            for line in sorted(_visible_lines(path) & secret):
                findings.append(f"{rel}: solution or hidden-test line {line!r}")
            if path.name.endswith(".ipynb") and source.name in rel.parts:
                findings.append(f"{rel}: a source notebook was published")
    return findings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m course_utils.grading", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write the student versions into labs/")
    g.add_argument("labs", nargs="*")
    p = sub.add_parser("parts", help="list a lab's graded parts and points")
    p.add_argument("lab")
    a = sub.add_parser("autograde", help="grade submissions in sandboxes into gradebook.db",
                       description="Grade every submission of LAB (see the module help and instructors.md).")
    a.add_argument("lab")
    a.add_argument("--submissions", metavar="DIR", help="folder of <student>/<lab>/<lab>.ipynb (default: submitted/)")
    a.add_argument("--jobs", type=int, default=2, help="submissions graded at once (default 2)")
    a.add_argument("--timeout", type=float, default=600, help="seconds per notebook before its kernel is killed (600)")
    a.add_argument("--cell-timeout", type=float, default=None,
                   help="seconds per cell before it is interrupted (default: ExecutePreprocessor.timeout)")
    a.add_argument("--memory", type=int, default=4096, metavar="MB", help="memory limit per kernel in MiB (4096)")
    a.add_argument("--student", action="append", help="grade only this student (repeatable)")
    a.add_argument("--run-all", action="store_true", help="also run the cells after the last test cell")
    a.add_argument("--no-feedback", action="store_true", help="skip nbgrader generate_feedback")
    a.add_argument("--unsandboxed", action="store_true",
                   help="grade even where the sandbox is unavailable (student code runs with your rights)")
    sub.add_parser("check-release", help="check that labs/ and _build/html contain no solution or hidden test")
    args = ap.parse_args(argv)
    root = find_root()
    if args.command == "generate":
        out = generate(args.labs or None, root)
        print(f"wrote {', '.join(args.labs or list_labs(root))} to {out}")
    elif args.command == "parts":
        nb = root / "solutions" / args.lab / f"{args.lab}.ipynb"
        parts = graded_parts(nb)
        for part in parts:
            print(f"part {part.index}: {part.points:g} points, solution cells {part.solution_ids}, tests {part.test_ids}")
        print(f"total: {sum(p.points for p in parts):g} points in {len(parts)} parts")
    elif args.command == "autograde":
        ok, why = sandbox.available()
        print(f"sandbox: {why}" if ok else f"sandbox: UNAVAILABLE ({why})")
        try:
            outcomes = autograde(args.lab, args.submissions, root, jobs=args.jobs, timeout=args.timeout,
                                 cell_timeout=args.cell_timeout, memory_mb=args.memory,
                                 sandbox_required=not args.unsandboxed, run_all=args.run_all,
                                 students=args.student, feedback=not args.no_feedback)
        except SandboxUnavailable as e:
            print(f"refusing to grade: {e}", file=sys.stderr)
            return 2
        for o in outcomes:
            print(o.summary())
        graded = sum(o.status == "graded" for o in outcomes)
        print(f"{graded} of {len(outcomes)} submissions graded; grades in grades/{args.lab}.csv"
              + ("" if ok else "  (UNSANDBOXED)"))
        return 0 if graded == len(outcomes) else 1
    elif args.command == "check-release":
        findings = check_release(root)
        for f in findings:
            print(f)
        print("release clean" if not findings else f"{len(findings)} problems")
        return 1 if findings else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
