"""The command line: one command per task, installed as console scripts by ``pip install -e ".[instructor]"``.

- ``course-generate [LAB ...]`` (``python -m course_grading generate``): write
  the student versions into ``labs/``;
- ``course-grade LAB`` (``python -m course_grading grade``, or ``autograde``):
  grade the submissions of a lab, each in a sandbox, into the gradebook;
- ``course-intake LAB [DOWNLOAD]`` (``python -m course_grading intake``): lay
  out a course platform's bulk download as ``submitted/<student>/<lab>/``;
- ``course-report LAB`` (``python -m course_grading report``): an HTML page
  and the CSV of a lab's grades, for reading at a glance;
- ``course-review LAB [STUDENT --accept|--reject]`` (``python -m course_grading
  review``): list the submissions held for tampering, or decide on one;
- ``course-check-release`` (``python -m course_grading check-release``):
  ``labs/`` and ``_build/html`` show no solution and no hidden test;
- ``course-student-edition DEST --repo-url URL`` (``python -m course_grading
  student-edition``): write the student edition;
- ``python -m course_grading parts LAB``: list a lab's graded parts and points.

Run them from the instructor repository (the folder holding
``nbgrader_config.py``, or below it). Each returns 0 on success, 1 when it ran
and found a problem (a submission not graded, a leak) and 2 when it refused to
run (no sandbox, a bad argument).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from course_grading.course import find_root, list_labs

__all__ = ["main", "grade", "review", "generate", "check_release", "student_edition", "intake", "report"]


def _generate_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("labs", nargs="*", metavar="LAB", help="labs to generate (default: every lab in solutions/)")


def _generate(args: argparse.Namespace) -> int:
    from course_grading.labs import generate as write_labs

    root = find_root()
    out = write_labs(args.labs or None, root)
    print(f"wrote {', '.join(args.labs or list_labs(root))} to {out}")
    return 0


def _parts_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("lab", metavar="LAB")


def _parts(args: argparse.Namespace) -> int:
    from course_grading.course import course_folder
    from course_grading.labs import graded_parts

    parts = graded_parts(course_folder(find_root(), "source") / args.lab / f"{args.lab}.ipynb")
    for part in parts:
        print(f"part {part.index}: {part.points:g} points, solution cells {part.solution_ids}, tests {part.test_ids}")
    print(f"total: {sum(p.points for p in parts):g} points in {len(parts)} parts")
    return 0


def _grade_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("lab", metavar="LAB", help="the assignment, e.g. lab02_attention")
    ap.add_argument("--submissions", metavar="DIR", help="folder of <student>/<lab>/<lab>.ipynb (default: submitted/)")
    ap.add_argument("--jobs", type=int, default=2, help="submissions graded at once (default 2)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per notebook before its kernel is killed (600)")
    ap.add_argument("--cell-timeout", type=float, default=None,
                    help="seconds per cell before it is interrupted (default: ExecutePreprocessor.timeout)")
    ap.add_argument("--memory", type=int, default=4096, metavar="MB", help="memory limit per kernel in MiB (4096)")
    ap.add_argument("--student", action="append", help="grade only this student (repeatable)")
    ap.add_argument("--force", action="store_true",
                    help="grade again submissions that did not change since their recorded grade")
    ap.add_argument("--run-all", action="store_true", help="also run the cells after the last test cell")
    ap.add_argument("--no-feedback", action="store_true", help="skip nbgrader generate_feedback")
    ap.add_argument("--unsandboxed", action="store_true",
                    help="grade even where the sandbox is unavailable (student code runs with your rights)")


def _grade(args: argparse.Namespace) -> int:
    from course_grading import sandbox
    from course_grading.autograde import PreflightError, SandboxUnavailable, autograde

    root = find_root()
    ok, why = sandbox.available()
    print(f"sandbox: {why}" if ok else f"sandbox: UNAVAILABLE ({why})")
    kept: list = []

    def show(outcome, fresh: bool) -> None:
        if fresh:
            print(outcome.summary(), flush=True)
        else:
            kept.append(outcome)

    try:
        outcomes = autograde(args.lab, args.submissions, root, jobs=args.jobs, timeout=args.timeout,
                             cell_timeout=args.cell_timeout, memory_mb=args.memory,
                             sandbox_required=not args.unsandboxed, run_all=args.run_all,
                             students=args.student, feedback=not args.no_feedback, force=args.force,
                             on_result=show)
    except (SandboxUnavailable, PreflightError) as e:
        print(f"refusing to grade: {e}", file=sys.stderr)
        return 2
    if kept:
        print(f"{len(kept)} unchanged since their last grading, not graded again (--force grades them): "
              + ", ".join(o.student for o in kept))
        for o in kept:
            if o.status != "graded":
                print("  " + o.summary())
    n_held = sum(o.status == "held" for o in outcomes + kept)
    if n_held:
        print(f"{n_held} held for review (tampering): see `course-review {args.lab}`")
    missing = sorted(set(args.student or []) - {o.student for o in outcomes + kept})
    if missing:
        print(f"no submission of {args.lab} for: {', '.join(missing)}")
    graded = sum(o.status == "graded" for o in outcomes + kept)
    print(f"{len(outcomes)} submissions graded in this run; {graded} of {len(outcomes) + len(kept)} graded in all; "
          f"every row in grades/{args.lab}.csv" + ("" if ok else "  (UNSANDBOXED)"))
    return 0 if graded == len(outcomes) + len(kept) and not missing else 1


def _intake_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("lab", metavar="LAB", help="the assignment, e.g. lab02_attention")
    ap.add_argument("download", nargs="?", metavar="DOWNLOAD",
                    help="a zip file or folder from the course platform (default: downloaded/LAB/archive)")
    ap.add_argument("--pattern", metavar="REGEX",
                    help="regular expression with a group (?P<student>...) matched against each file name "
                         "(default: <student>.ipynb or <student>_<anything>.ipynb)")
    ap.add_argument("--submissions", metavar="DIR", help="where to lay them out (default: submitted/)")


def _intake(args: argparse.Namespace) -> int:
    from course_grading.intake import IntakeError, take_in

    try:
        done = take_in(args.lab, args.download, find_root(), pattern=args.pattern, submissions=args.submissions)
    except IntakeError as e:
        print(f"refusing the download: {e}", file=sys.stderr)
        return 2
    for student, files in done.students.items():
        print(f"{student}: {', '.join(files)}")
    sections = (("unchanged (already laid out)", done.unchanged), ("not matched to a student", done.unmatched),
                ("refused", done.refused), ("dropped for a later file", done.superseded),
                ("ignored (platform clutter)", done.ignored))
    for title, items in sections:
        if items:
            print(f"{title}: {len(items)}")
            for item in items:
                print(f"  {item}")
    for student, files in done.conflicts.items():
        print(f"{student}: NOT laid out, several files and no timestamps to choose: {', '.join(files)}")
    print(f"{len(done.students)} laid out, {len(done.unchanged)} unchanged, {len(done.conflicts)} clashes, "
          f"{len(done.unmatched)} unmatched, {len(done.refused)} refused; in {done.dest}")
    return 0 if done.ok else 1


def _report_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("labs", nargs="+", metavar="LAB", help="the graded assignments, e.g. lab02_attention")


def _report(args: argparse.Namespace) -> int:
    from course_grading.report import write_report

    root = find_root()
    status = 0
    for lab in args.labs:
        try:
            page = write_report(lab, root)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        print(f"wrote {page} and {page.with_suffix('.csv')}")
    return status


def _review_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("lab", metavar="LAB", help="the assignment, e.g. lab06_decoding")
    ap.add_argument("student", nargs="?", metavar="STUDENT", help="the held submission to decide on")
    decision = ap.add_mutually_exclusive_group()
    decision.add_argument("--accept", action="store_true", help="write its kept grades into the gradebook")
    decision.add_argument("--reject", action="store_true", help="record 0 for every test cell instead")


def _review(args: argparse.Namespace) -> int:
    from course_grading.review import decide, held

    root = find_root()
    if not args.student:
        found = held(root, args.lab)
        for student, kept in found.items():
            print(f"{student}: " + " | ".join(kept["outcome"].get("evidence", [])))
        print(f"{len(found)} submissions of {args.lab} held for review" +
              (f"; decide with `course-review {args.lab} STUDENT --accept` or `--reject`" if found else ""))
        return 0
    if not (args.accept or args.reject):
        print("give --accept or --reject", file=sys.stderr)
        return 2
    try:
        score, top = decide(args.lab, args.student, accept=args.accept, root=root)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.student}: {score:g}/{top:g} {'accepted' if args.accept else 'rejected'}, written to gradebook.db")
    return 0


def _check_release_args(ap: argparse.ArgumentParser) -> None:
    """``check-release`` takes no arguments: it checks the course it is run in."""


def _check_release(args: argparse.Namespace) -> int:
    from course_grading.leaks import check_release as find

    findings = find(find_root())
    for finding in findings:
        print(finding)
    print("release clean" if not findings else f"{len(findings)} problems")
    return 1 if findings else 0


def _edition_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("dest", nargs="?", metavar="DEST",
                    help="folder to write (new, empty, or a clean clone of the student repository)")
    ap.add_argument("--repo-url", help="the student repository, e.g. https://github.com/org/course (required)")
    ap.add_argument("--site-url", help="where the book is served (default: the GitHub Pages address of --repo-url)")
    ap.add_argument("--root", help="the instructor repository (default: the current folder)")
    ap.add_argument("--no-cache", action="store_true", help="do not copy the book's execution cache")
    ap.add_argument("--force", action="store_true",
                    help="replace the contents of a non-empty folder that is not a git clone")
    ap.set_defaults(usage=f"usage: {ap.prog} DEST --repo-url https://github.com/ORG/REPO "
                          "[--site-url URL] [--root DIR] [--no-cache] [--force]")


def _edition(args: argparse.Namespace) -> int:
    if not args.dest or not args.repo_url:
        print(args.usage, file=sys.stderr)
        return 2
    from course_grading.edition import make_edition

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


@dataclass(frozen=True)
class _Command:
    """One command: its console script (if any), a line of help, its arguments and what it runs."""

    script: str | None
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    aliases: tuple[str, ...] = ()


_COMMANDS: dict[str, _Command] = {
    "generate": _Command("course-generate", "write the student versions of the labs into labs/",
                         _generate_args, _generate),
    "parts": _Command(None, "list a lab's graded parts and points", _parts_args, _parts),
    "grade": _Command("course-grade", "grade every submission of a lab, each in a sandbox, into gradebook.db "
                                      "(see instructors.md)", _grade_args, _grade, aliases=("autograde",)),
    "intake": _Command("course-intake", "lay out a course platform's bulk download (zip or folder) as "
                                        "submitted/<student>/<lab>/", _intake_args, _intake),
    "report": _Command("course-report", "write grades/<lab>.html (figures, parts most missed, held, not graded, "
                                        "flags) and grades/<lab>.csv", _report_args, _report),
    "review": _Command("course-review", "list the submissions held for tampering, accept or reject one "
                                        "(see instructors.md)", _review_args, _review),
    "check-release": _Command("course-check-release", "check that labs/ and _build/html show no solution "
                                                      "and no hidden test", _check_release_args, _check_release),
    "student-edition": _Command("course-student-edition", "write the student edition (see publishing.md)",
                                _edition_args, _edition),
}


def main(argv: list[str] | None = None) -> int:
    """``python -m course_grading COMMAND ...``: every command, as sub-commands."""
    import course_grading

    ap = argparse.ArgumentParser(prog="python -m course_grading", description=course_grading.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, command in _COMMANDS.items():
        parser = sub.add_parser(name, aliases=list(command.aliases), help=command.help, description=command.help)
        command.add_args(parser)
        parser.set_defaults(run=command.run)
    args = ap.parse_args(argv)
    return args.run(args)


def _console_script(name: str) -> Callable[[list[str] | None], int]:
    command = _COMMANDS[name]

    def run(argv: list[str] | None = None) -> int:
        ap = argparse.ArgumentParser(prog=command.script, description=command.help)
        command.add_args(ap)
        return command.run(ap.parse_args(argv))

    run.__doc__ = f"``{command.script}``: {command.help}."
    return run


grade = _console_script("grade")
review = _console_script("review")
generate = _console_script("generate")
check_release = _console_script("check-release")
student_edition = _console_script("student-edition")
intake = _console_script("intake")
report = _console_script("report")
