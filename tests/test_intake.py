"""Intake (course_grading.intake, `course-intake`): a platform's bulk download laid out as submitted/.

No grading here: a throwaway course with one lab's release notebook (for its
name) and downloads built in the test. Checked: the default pattern and
nbgrader's zip_collect conventions (named_regexp with student_id, file_id,
timestamp; per-student zips in a folder), files that match nobody are reported,
two files for one student (newest timestamp wins, or the clash is reported and
the student left out), a second intake of the same download changes nothing,
and hostile downloads (zip slip, absolute paths, links, oversized files, a
student id the grader refuses, a forged timestamp.txt) write nothing outside
submitted/<student>/<lab>/.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from course_grading import cli
from course_grading.intake import IntakeError, take_in

ROOT = Path(__file__).resolve().parents[1]
LAB = "lab02_attention"
NB = f"{LAB}.ipynb"


@pytest.fixture
def course(tmp_path) -> Path:
    course = tmp_path / "course"
    (course / "labs" / LAB).mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    (course / "labs" / LAB / NB).write_text(json.dumps({"cells": [], "metadata": {}}))
    return course


def notebook(tag: str) -> bytes:
    return json.dumps({"cells": [{"cell_type": "code", "source": tag}], "metadata": {}}).encode()


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name), data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return path


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def test_default_pattern_lays_out_each_student_and_reports_the_rest(course, tmp_path):
    download = make_zip(tmp_path / "class.zip", {
        "alice.ipynb": notebook("a"), "bob_lab02 (1).ipynb": notebook("b"), "exports/carol_final.ipynb": notebook("c"),
        "README.txt": b"from the platform", "__MACOSX/._alice.ipynb": b"\0", "notes.ipynb.txt": b"x"})
    done = take_in(LAB, download, course)
    sub = course / "submitted"
    assert done.students == {s: [NB] for s in ("alice", "bob", "carol")}
    for student, tag in (("alice", "a"), ("bob", "b"), ("carol", "c")):
        assert (sub / student / LAB / NB).read_bytes() == notebook(tag)
    assert sorted(done.unmatched) == ["README.txt", "notes.ipynb.txt"]
    assert done.ignored == ["__MACOSX/._alice.ipynb"] and not done.refused and not done.ok
    assert files_under(sub) == {f"{s}/{LAB}/{NB}" for s in ("alice", "bob", "carol")}

    again = take_in(LAB, download, course)  # the same download again: nothing to do
    assert again.students == {} and sorted(again.unchanged) == ["alice", "bob", "carol"]
    make_zip(download, {"alice.ipynb": notebook("a2"), "bob_lab02 (1).ipynb": notebook("b")})
    third = take_in(LAB, download, course)
    assert third.students == {"alice": [NB]} and third.unchanged == ["bob"]
    assert (sub / "alice" / LAB / NB).read_bytes() == notebook("a2")
    assert (sub / "carol" / LAB / NB).is_file()  # a student missing from a later download is kept


def test_nbgrader_named_regexp_with_timestamps_keeps_the_newest(course, tmp_path):
    pattern = r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>\w+)"
    download = tmp_path / "archive"
    download.mkdir()
    for name, tag in (("lab02_alice_attempt_2026-01-30-15-00-00_lab02_attention.ipynb", "old"),
                      ("lab02_alice_attempt_2026-02-01-09-30-00_lab02_attention.ipynb", "new"),
                      ("lab02_bob_attempt_2026-01-29-10-00-00_lab02_attention.ipynb", "bob")):
        (download / name).write_bytes(notebook(tag))
    done = take_in(LAB, download, course, pattern=pattern)
    alice = course / "submitted" / "alice" / LAB
    assert (alice / NB).read_bytes() == notebook("new")
    assert (alice / "timestamp.txt").read_text() == "2026-02-01 09:30:00"  # as nbgrader's zip_collect writes it
    assert done.superseded and "2026-01-30" in done.superseded[0] and done.ok
    assert sorted(done.students) == ["alice", "bob"]


def test_the_course_config_pattern_is_the_default(course, tmp_path):
    with open(course / "nbgrader_config.py", "a") as f:
        f.write('\nc.FileNameCollectorPlugin.named_regexp = r"(?P<student_id>[a-z]+)-(?P<file_id>.*)"\n')
    (course / "downloaded" / LAB / "archive").mkdir(parents=True)  # nbgrader's zip_collect folder
    make_zip(course / "downloaded" / LAB / "archive" / "all.zip", {"dora-whatever.ipynb": notebook("d")})
    done = take_in(LAB, None, course)
    assert done.students == {"dora": [NB]} and done.ok


def test_two_files_without_timestamps_leave_the_student_out(course, tmp_path):
    download = make_zip(tmp_path / "d.zip", {"alice.ipynb": notebook("1"), "alice_v2.ipynb": notebook("2"),
                                             "bob.ipynb": notebook("b")})
    done = take_in(LAB, download, course)
    assert done.conflicts == {"alice": ["alice.ipynb", "alice_v2.ipynb"]} and not done.ok
    assert list(done.students) == ["bob"] and not (course / "submitted" / "alice").exists()


def test_per_student_zips_in_a_folder_with_other_files(course, tmp_path):
    download = tmp_path / "download"
    download.mkdir()
    make_zip(download / "alice.zip", {"lab02_attention.ipynb": notebook("a"), "data/words.txt": b"w",
                                      "timestamp.txt": b"2020-01-01 00:00:00"})
    make_zip(download / "bob.zip", {"work/bob_nb.ipynb": notebook("b")})
    done = take_in(LAB, download, course, pattern=r"/(?P<student>[^/]+)/(?P<file_id>.+)$")
    alice = course / "submitted" / "alice" / LAB
    assert files_under(alice) == {NB, "data/words.txt"} and (alice / "data" / "words.txt").read_bytes() == b"w"
    assert done.refused == ["alice/timestamp.txt: a name the grader reserves"]  # no forged submission time
    assert (course / "submitted" / "bob" / LAB / NB).read_bytes() == notebook("b")


def test_hostile_archive_writes_nothing_outside_submitted(course, tmp_path):
    download = make_zip(tmp_path / "evil.zip", {
        "../escape.ipynb": notebook("x"), "/abs.ipynb": notebook("x"), "sub/../../up.ipynb": notebook("x"),
        "C:/win.ipynb": notebook("x"), "big.ipynb": b"{" + b" " * 4096 + b"}", ".hidden.ipynb": notebook("x"),
        "fr ank.ipynb": notebook("x"), "erin.ipynb": notebook("e")},
        links={"mallory.ipynb": "/etc/passwd"})
    before = files_under(tmp_path)
    done = take_in(LAB, download, course, max_file_mb=2 / 1024)
    refused = "\n".join(done.refused)
    for name, why in (("../escape.ipynb", "leaves the folder"), ("/abs.ipynb", "absolute"),
                      ("sub/../../up.ipynb", "leaves the folder"), ("C:/win.ipynb", "absolute"),
                      ("big.ipynb", "larger than"), ("mallory.ipynb", "symbolic link"),
                      (".hidden.ipynb", "student id"), ("fr ank.ipynb", "student id")):
        assert any(line.startswith(name + ":") and why in line for line in done.refused), (name, refused)
    assert done.students == {"erin": [NB]}
    assert files_under(tmp_path) - before == {f"course/submitted/erin/{LAB}/{NB}"}


def test_hostile_folder_links_are_not_followed(course, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the hidden tests")
    download = tmp_path / "download"
    (download / "inner").mkdir(parents=True)
    (download / "mallory.ipynb").symlink_to(secret)
    (download / "linked").symlink_to(tmp_path)
    (download / "inner" / "zoe.ipynb").write_bytes(notebook("z"))
    os.mkfifo(download / "pipe.ipynb")  # reading it would hang the intake
    done = take_in(LAB, download, course)
    assert sorted(done.refused) == ["linked/: a symbolic link", "mallory.ipynb: a symbolic link",
                                    "pipe.ipynb: not a regular file"]
    assert done.students == {"zoe": [NB]}
    assert "hidden" not in "".join(p.read_text() for p in (course / "submitted").rglob("*") if p.is_file())


def test_refuses_what_it_cannot_use(course, tmp_path):
    with pytest.raises(IntakeError, match="not a lab"):
        take_in("../../elsewhere", tmp_path, course)
    with pytest.raises(IntakeError, match="no group"):
        take_in(LAB, tmp_path, course, pattern=r"(?P<name>.*)\.ipynb")
    with pytest.raises(IntakeError, match="not a regular expression"):
        take_in(LAB, tmp_path, course, pattern="(")
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(IntakeError, match="not a readable zip"):
        take_in(LAB, tmp_path / "fake.zip", course)
    with pytest.raises(IntakeError, match="not a folder or a zip"):
        take_in(LAB, tmp_path / "missing.zip", course)
    download = make_zip(tmp_path / "many.zip", {f"s{i}.ipynb": b"{" + b" " * 1500 + b"}" for i in range(4)})
    with pytest.raises(IntakeError, match="more than"):  # the total, counted as it is read
        take_in(LAB, download, course, max_total_mb=4 / 1024)


def test_the_command(course, tmp_path, monkeypatch, capsys):
    download = make_zip(tmp_path / "class.zip", {"alice.ipynb": notebook("a"), "stray.pdf": b"%PDF"})
    monkeypatch.chdir(course)
    assert cli.main(["intake", LAB, str(download)]) == 1  # a file matched nobody
    out = capsys.readouterr().out
    assert f"alice: {NB}" in out and "not matched to a student: 1\n  stray.pdf" in out
    assert cli.main(["intake", LAB, str(download), "--pattern", r"(?P<student>\w+)\.(ipynb|pdf)"]) == 0
    assert "stray: stray.pdf" in capsys.readouterr().out
    assert cli.main(["intake", LAB, str(download), "--pattern", "(?P<x>y)"]) == 2
    assert "refusing the download" in capsys.readouterr().err
