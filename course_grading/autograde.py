"""Autograde: grade every submission of a lab, in parallel, each in its own sandbox, into one gradebook.

:func:`autograde` grades with nbgrader's own preprocessors, but runs each
student's kernel in a jail (:mod:`course_grading.sandbox`) and judges each
test cell by a secret it alone can print (:mod:`course_grading.kernel`), so
that grades cannot be forged from inside a notebook. The command is
``course-grade LAB`` (see ``instructors.md`` for the whole workflow).

How a submission is graded (one worker process per ``jobs`` slot):

1. *Repair* (:func:`course_grading.repair.repair`): the notebook is matched
   back to the release version by nbgrader ids, or, where those were lost, by
   the functions its cells define and by text similarity; duplicated ids are
   made unique, the release order restored and deleted test cells re-inserted.
2. *nbgrader autograde* in a throwaway course holding this one submission and
   a copy of the gradebook with the assignment but no students: nbgrader
   restores the test cells and points from it, as usual.
3. *Execution in the jail* (``SandboxedExecute``): the kernel sees the
   interpreter, the course package and a scratch copy of this submission
   only; no network; a memory limit, a per-cell and a per-notebook time limit.
   Every test cell gets a last line printing a fresh random nonce; a test cell
   earns its points only if that nonce was printed and the cell raised no
   error and wrote nothing to stderr (nbgrader's rule), so a kernel that hides
   its tracebacks scores nothing. The passed tests are re-run without IPython
   (:mod:`course_grading.integrity`).
4. The grades are copied from the throwaway gradebook into the real one by
   the parent process, one submission at a time; feedback is generated and the
   submission's row merged into ``grades/<lab>.csv`` and ``grades/<lab>.json``
   (:mod:`course_grading.results`), which also decide what a later run skips:
   a submission whose content and grader are unchanged is not graded again.

The preflight (:mod:`course_grading.preflight`) runs while the workers start
and grade the first submissions; nothing is merged before it passed.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from course_grading import results, sandbox
from course_grading.course import course_config, course_folder, find_root, nbgrader_command, nbgrader_env
from course_grading.flags import suspicious
from course_grading.labs import generate
from course_grading.preflight import PreflightError, preflight
from course_grading.repair import MAX_NOTEBOOK_MB, SubmissionError, load_submission, repair

__all__ = ["autograde", "Outcome", "PreflightError", "SandboxUnavailable", "STUDENT_ID"]

#: Student folders with other names are not graded (the name becomes a path and a gradebook key).
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")


class SandboxUnavailable(RuntimeError):
    """The jail cannot run here and grading unsandboxed was not asked for."""


@dataclass
class Outcome:
    """What happened to one submission.

    ``status`` is ``'graded'``, ``'held'`` (its tests passed in the student's
    kernel but not when re-run without IPython, see
    :mod:`course_grading.integrity`: the score was computed but is neither in
    the gradebook nor in the CSV until ``course-review`` accepts it; ``evidence``
    says what was seen) or ``'not graded'``; ``problems`` names what went
    wrong while running it (timeout, memory, kernel died, failed imports),
    ``repairs`` what :func:`course_grading.repair.repair` fixed, ``flags`` what
    :func:`course_grading.flags.suspicious` saw; ``check_seconds`` is the time of the
    re-run, ``check_every_cell`` whether it had to run the lab's demonstrations too
    (the re-run without them disagreed with the kernel).
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
    evidence: list[str] = field(default_factory=list)
    check_seconds: float = 0.0
    check_every_cell: bool = False

    def summary(self) -> str:
        """One line for the report, e.g. ``'alice: 12/12 graded; repaired: …'``."""
        score = "-" if self.score is None else f"{self.score:g}/{self.max_score:g}"
        parts = [f"{self.student}: {score} {self.status}"]
        if self.reason:
            parts.append(self.reason)
        for label, items in (("HELD FOR REVIEW", self.evidence), ("problems", self.problems),
                             ("repaired", self.repairs), ("flagged", self.flags)):
            if items:
                parts.append(f"{label}: " + "; ".join(items))
        return " | ".join(parts)


def _preflight_message(lab: str, broken: list[str]) -> str:
    """Why grading was refused, and what to do about it."""
    from course_grading.sandbox import python_paths

    return (f"the grading environment cannot run {lab}; no submission was graded:\n  " + "\n  ".join(broken) +
            "\nThe jail sees only these folders: " + ", ".join(python_paths()) + ". Install the course "
            "package into the virtual environment from this course's checkout (`pip install -e .` here, or a "
            "regular `pip install .`) and the packages the lab imports, then grade again.")


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
        source = course_folder(root, "source")
        shutil.copytree(source / lab, tmp / source.name / lab)
        done = subprocess.run(cmd, cwd=tmp, env=nbgrader_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{done.stdout}\n{done.stderr}")
        return tmp / course_folder(root, "release").name / lab
    release = course_folder(root, "release")
    if (release / lab).is_dir():
        return release / lab
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


def _init_worker(counter, grader: int, warm: dict | None = None) -> None:
    """Give each worker process its own slot (its jail uid) and import what grading needs (seconds);
    the worker dies with the grader process ``grader`` (and its jails with it). ``warm``
    (``lab``, ``notebook``, ``threads``): start the integrity check's warm process for that release
    notebook first (:func:`course_grading.kernel.prewarm_check`), which imports while this one does."""
    global _SLOT
    if platform.system() == "Linux":
        sandbox.die_with_parent(grader)
    with counter.get_lock():
        _SLOT = counter.value
        counter.value += 1
    # jsonschema registers an IRI format checker when rfc3987_syntax is installed, which builds its grammar
    # at import: 1 to 2 s of every worker here. Nothing here checks formats (nbformat and nbgrader validate
    # notebooks without a format checker), so this process goes without it.
    sys.modules.setdefault("rfc3987_syntax", None)
    import course_grading.kernel

    if warm:
        try:
            course_grading.kernel.prewarm_check(warm["notebook"], warm["lab"], warm["threads"])
        except Exception:  # noqa: BLE001 - only a head start: the first check starts it otherwise
            pass
    import nbgrader.apps  # noqa: F401


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

    from nbgrader.apps import NbGraderAPI
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import Execute

    from course_grading.kernel import SandboxedExecute  # imports nbgrader: only in the worker

    cfg = course_config(task["root"])
    cfg.CourseDirectory.root = str(course)
    cfg.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    cfg.CourseDirectory.submitted_directory = "submitted"
    cfg.CourseDirectory.autograded_directory = "autograded"
    steps = list(cfg.Autograde.get("autograde_preprocessors", Autograde.class_traits()["autograde_preprocessors"].default()))
    cfg.Autograde.autograde_preprocessors = [
        SandboxedExecute if isinstance(p, type) and issubclass(p, Execute) else p for p in steps]
    per_cell = cfg.Execute.get("timeout") or cfg.ExecutePreprocessor.get("timeout") or task["timeout"]
    scratch, control = course.parent / "job", course.parent / "ctl"
    scratch.mkdir()
    control.mkdir(mode=0o700)
    cfg.SandboxedExecute.update(
        timeout=int(min(task["cell_timeout"] or per_cell, task["timeout"])), notebook_timeout=task["timeout"],
        sandbox=task["sandbox"], memory_mb=task["memory_mb"], scratch=str(scratch), control=str(control),
        uid=62000 + (_SLOT or 0), threads=task["threads"], run_all=task["run_all"], lab=lab,
        check=cfg.SandboxedExecute.get("check", True))
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    result = api.autograde(lab, out.student, force=True, create=True)
    try:
        report = json.loads((control / "execution.json").read_text())
    except (OSError, ValueError):
        report = {"problems": []}
    out.problems = report["problems"]
    out.check_seconds = report.get("check_seconds", 0.0)
    out.check_every_cell = bool(report.get("check_every_cell"))
    if report.get("environment"):  # the lab's own imports failed: the grading environment is broken
        out.reason = ("the grading environment is broken, not graded: " + report["environment"][0] +
                      " (fix the environment and grade again)")
        return {**asdict(out), "seconds": time.monotonic() - started}
    if not result.get("success"):
        error = (result.get("error") or "").strip().splitlines()
        out.reason = "nbgrader autograde failed: " + (error[-1] if error else "see its log")
        return {**asdict(out), "seconds": time.monotonic() - started, "log": result.get("log", "")}
    feedback = api.generate_feedback(lab, out.student, force=True) if task["feedback"] else {"success": True}
    if not feedback.get("success"):
        out.problems.append("nbgrader generate_feedback failed")
    out.status = "held" if report.get("held") else "graded"
    out.evidence = report.get("held", [])
    return {**asdict(out), "seconds": time.monotonic() - started, "course": str(course)}


def _merge(result: dict, db: Path, lab: str, root: Path) -> None:
    """Copy one student's grades from the throwaway gradebook into the real one (parent only);
    a held submission's grades are kept aside for ``course-review`` instead (:mod:`course_grading.review`)."""
    from course_grading import review

    warnings.filterwarnings("ignore", message=".*not in session.*")
    course = Path(result["course"])
    student = result["student"]
    record = review.read_grades(course / "gradebook.db", lab, student)
    if result["status"] == "held":
        result["evidence"] = [f"would score {record['score']:g}/{record['max_score']:g}; not in the gradebook "
                              f"until `course-review {lab} {student} --accept`", *result["evidence"]]
        review.hold(root, lab, student, record, {k: v for k, v in result.items() if k not in ("course", "log")}, course)
        return
    result["score"], result["max_score"], result["cells"] = review.write_grades(record, db, lab, student)
    held = review.held_folder(root, lab, student)
    if held.exists():  # graded again, cleanly: an older hold no longer applies
        shutil.rmtree(held)
    for kind in ("autograded", "feedback"):
        made = course / kind / student / lab
        target = course_folder(root, kind) / student / lab
        if made.is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(made, target)


def _in_gradebook(db: Path, lab: str) -> set[str]:
    """Students who have a submission of ``lab`` in the gradebook."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT submitted_assignment.student_id FROM submitted_assignment JOIN assignment ON "
                           "submitted_assignment.assignment_id = assignment.id WHERE assignment.name = ?",
                           (lab,)).fetchall()
    return {r[0] for r in rows}


def autograde(lab: str, submissions: str | os.PathLike | None = None, root: str | os.PathLike | None = None, *,
              jobs: int = 2, timeout: float = 600, cell_timeout: float | None = None, memory_mb: int = 4096,
              sandbox_required: bool = True, run_all: bool = False, students: list[str] | None = None,
              feedback: bool = True, progress: bool = True, force: bool = False,
              on_result: Callable[[Outcome, bool], None] | None = None) -> list[Outcome]:
    """Grade the new and changed submissions of ``lab`` into the course's gradebook.

    A submission is graded again only when its folder's content
    (:func:`course_grading.results.submission_hash`) or what its grade depends on
    (:func:`course_grading.results.grading_key`: the lab's hidden tests, the
    grader, the limits) changed since its recorded grade, or with ``force``.
    ``grades/<lab>.csv`` and ``grades/<lab>.json`` are merged: rows of students
    not graded in this run are kept; both are rewritten after each submission.

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
        progress: show a progress bar.
        force: grade every selected submission, changed or not.
        on_result: called with ``(outcome, True)`` as each submission finishes,
            and with ``(recorded outcome, False)`` for each unchanged one skipped
            (before grading starts); lines it prints go above the progress bar.

    Returns one :class:`Outcome` per submission graded in this run (not the skipped ones).
    """
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
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
    submitted = Path(submissions) if submissions else course_folder(root, "submitted")
    db = root / "gradebook.db"
    work = Path(tempfile.mkdtemp(prefix="grade-"))
    outcomes: list[Outcome] = []
    rows = results.load(root, lab)
    key = results.grading_key(root, lab, dict(  # numbers as the command line passes them: 120 and 120.0 agree
        timeout=float(timeout), cell_timeout=None if cell_timeout is None else float(cell_timeout),
        memory_mb=int(memory_mb), run_all=bool(run_all), sandboxed=bool(jailed)))

    def record(outcome: Outcome, digest: str | None) -> None:
        rows[outcome.student] = {**asdict(outcome), "hash": digest, "key": key, "sandboxed": jailed,
                                 "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        results.save(root, lab, rows)  # after every submission: an interrupted run keeps what it graded

    def tell(outcome: Outcome, fresh: bool, bar=None) -> None:
        if on_result is not None:
            if bar is None:
                on_result(outcome, fresh)
            else:
                with bar.external_write_mode(file=sys.stdout):
                    on_result(outcome, fresh)

    try:
        release = _ensure_assignment(root, lab, db, work)
        notebooks = _notebook_names(db, lab)
        _template_gradebook(db, work / "template.db")
        known = _in_gradebook(db, lab)
        tasks, digests, decided = [], {}, []  # decided: (outcome, fresh) to record and tell once the preflight passed
        for folder in sorted(p for p in submitted.iterdir() if p.is_dir()):
            if students is not None and folder.name not in students:
                continue
            if not STUDENT_ID.match(folder.name):
                decided.append((Outcome(folder.name, reason="student id with unexpected characters: not graded"), True))
                continue
            if not (folder / lab).is_dir():
                continue
            digests[folder.name] = digest = results.submission_hash(folder / lab)
            previous = rows.get(folder.name)
            if not force and results.is_current(previous, digest, key) and (
                    previous.get("status") != "graded" or folder.name in known):
                decided.append((results.outcome_of(previous), False))
                continue
            tasks.append(dict(student=folder.name, lab=lab, root=str(root), submission=str(folder / lab),
                              course=str(work / f"t{len(tasks):04d}" / "course"), template_db=str(work / "template.db"),
                              release=str(release), notebooks=notebooks, timeout=timeout, cell_timeout=cell_timeout,
                              memory_mb=memory_mb, sandbox=jailed, run_all=run_all, feedback=feedback,
                              threads=max(1, (os.cpu_count() or 1) // jobs)))
        ctx = get_context("spawn")
        warm = None
        if jailed and tasks and notebooks and course_config(root).SandboxedExecute.get("check", True):
            warm = dict(lab=lab, notebook=str(release / f"{notebooks[0]}.ipynb"), threads=tasks[0]["threads"])
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(ctx.Value("i", 0), os.getpid(), warm)) as pool, ThreadPoolExecutor(1) as thread:
            # The preflight (the lab's imports, in a jail) runs while the workers start and grade the first
            # submissions into their throwaway courses; no result is merged, recorded or told before it passed.
            checked = thread.submit(preflight, release, notebooks, jailed, memory_mb)
            futures = {pool.submit(_grade_one, task): task for task in tasks}
            try:
                if tasks:
                    import nbgrader.api  # noqa: F401 - what the merges need (seconds), imported while the workers grade
                broken = checked.result()
                if broken:  # nothing was recorded or told yet: drop what was graded, wait for what is running
                    raise PreflightError(_preflight_message(lab, broken))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            for outcome, fresh in decided:
                if fresh:
                    outcomes.append(outcome)
                    record(outcome, None)
                tell(outcome, fresh)
            if not jailed:
                print(f"WARNING: grading UNSANDBOXED ({why}): student code runs with your rights.", file=sys.stderr)
            with tqdm(total=len(tasks), desc=f"grading {lab}", disable=not progress or not tasks) as bar:
                for future in as_completed(futures):
                    task = futures[future]
                    try:
                        result = future.result()
                        if result["status"] in ("graded", "held"):
                            _merge(result, db, lab, root)  # one at a time: the parent alone writes grades
                    except Exception as e:  # noqa: BLE001 - record it, grade the others
                        result = asdict(Outcome(task["student"], reason=f"grader error: {type(e).__name__}: {e}"))
                    result.pop("course", None)
                    result.pop("log", None)
                    outcomes.append(Outcome(**result))
                    record(outcomes[-1], digests[task["student"]])
                    tell(outcomes[-1], True, bar)
                    bar.update()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    outcomes.sort(key=lambda o: o.student)
    return outcomes


def _write_grades(root: Path, lab: str, outcomes: list[Outcome], sandboxed: bool) -> None:
    """Merge ``outcomes`` into ``grades/<lab>.json`` and ``.csv`` (other students' rows are kept)."""
    rows = results.load(root, lab)
    for o in outcomes:
        rows[o.student] = {**rows.get(o.student, {}), **asdict(o), "sandboxed": sandboxed}
    results.save(root, lab, rows)
