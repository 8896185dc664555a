"""Intake: a course platform's bulk download laid out as nbgrader's ``submitted/<student>/<lab>/``.

A download is a zip file or a folder (zip files inside it are opened too, as
nbgrader's ``zip_collect`` does, each as a folder named after it). Each file's
name, or its path inside the download when the pattern holds a ``/``
(written ``/folder/…/name``), is matched from its start against a regular
expression with a named group ``student`` (or nbgrader's ``student_id``) and,
optionally, nbgrader's ``file_id`` and ``timestamp``. The default pattern
takes ``alice.ipynb`` and ``alice_anything.ipynb`` for the student ``alice``;
a course whose ``nbgrader_config.py`` sets
``FileNameCollectorPlugin.named_regexp`` gets that one instead::

    >>> take_in("lab02_attention", "downloads/lab02.zip", root=".")   # doctest: +SKIP
    Intake(... students={'alice': ['lab02_attention.ipynb'], ...}, unmatched=['README.txt'], ...)

Every notebook of a student becomes the lab's notebook ``<lab>.ipynb``
(when the lab has several notebooks, ``file_id`` must name one); other files
matched to a student go beside it under their ``file_id`` (or name). When a
student has two files for one place, the one with the latest ``timestamp``
group wins if every one has a timestamp; otherwise none of that student's
files is laid out and the clash is reported, so that you choose. The latest
timestamp is written to ``timestamp.txt``, as nbgrader does.

The download comes from students, so it is read as hostile: entries whose path
leaves the folder (``../``, absolute paths, zip slip), links, devices, files
larger than ``max_file_mb``, a total above ``max_total_mb``, student ids that
the grader would refuse (:data:`course_grading.autograde.STUDENT_ID`) and a
student file named ``timestamp.txt`` are refused and reported; nothing is ever
written outside ``submitted/<student>/<lab>/``. A student's folder is replaced
only when its content changes, so incremental grading sees what is new.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from course_grading.autograde import STUDENT_ID
from course_grading.course import LAB_NAME, course_config, course_folder, find_root

__all__ = ["DEFAULT_PATTERN", "Intake", "IntakeError", "take_in", "default_download"]

#: ``alice.ipynb`` or ``alice_<anything>.ipynb`` -> student ``alice``.
DEFAULT_PATTERN = r"(?P<student>[^_]+?)(?:_.*)?\.ipynb$"
#: Files that platforms and operating systems add: skipped, listed as ignored.
CLUTTER = re.compile(r"(^|/)(__MACOSX|\.ipynb_checkpoints|\.DS_Store|Thumbs\.db|desktop\.ini)(/|$)|(^|/)\._")
MAX_ENTRIES = 100_000
MAX_NESTING = 2


class IntakeError(ValueError):
    """The download cannot be taken in at all (the message says why)."""


@dataclass
class Intake:
    """What an intake did.

    ``students`` maps each student laid out (written or replaced) to the files
    written in their lab folder; ``unchanged`` lists students whose folder
    already held exactly this; ``unmatched`` the files that named no student;
    ``refused`` unsafe entries (``'path: why'``); ``conflicts`` students left
    out because two files competed for one place (with those files);
    ``superseded`` files dropped for a later one; ``ignored`` platform clutter.
    """

    lab: str
    dest: Path
    students: dict[str, list[str]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    superseded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every file of the download found its place."""
        return not (self.unmatched or self.refused or self.conflicts)


@dataclass
class _Entry:
    path: str  # relative, '/'-separated, checked
    size: int
    read: Callable[[], bytes]


class _Budget:
    """Bytes read so far, against ``max_total``."""

    def __init__(self, max_file: int, max_total: int):
        self.max_file, self.max_total, self.used = max_file, max_total, 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.max_total:
            raise IntakeError(f"the download holds more than {self.max_total // 2**20} MB: refusing it "
                              "(raise max_total_mb if it is genuine)")


def _unsafe(name: str) -> str:
    """Why an archive member's name is unsafe, or ``''``: ``'../x'`` -> ``'leaves the folder'``."""
    if any(ord(ch) < 32 or ch == "\x7f" for ch in name):
        return "control characters in its name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "a path that leaves the folder (zip slip)"
    return ""


def _zip_entries(data: io.BytesIO | Path, prefix: str, budget: _Budget, refused: list[str],
                 depth: int) -> Iterator[_Entry]:
    try:
        zf = zipfile.ZipFile(data)
    except (zipfile.BadZipFile, OSError) as e:
        if depth == 0:
            raise IntakeError(f"not a readable zip file: {e}") from None
        refused.append(f"{prefix}.zip: not a readable zip file ({e})")
        return
    infos = zf.infolist()  # zf stays open: the entries read from it later
    if len(infos) > MAX_ENTRIES:
        raise IntakeError(f"{prefix or 'the archive'} has {len(infos)} entries: refusing it")
    for info in infos:
        raw = info.filename.replace("\\", "/")
        shown = f"{prefix}/{raw}" if prefix else raw
        if info.is_dir():
            continue
        why = _unsafe(raw)
        mode = info.external_attr >> 16
        if not why and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            why = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        if not why and info.file_size > budget.max_file:
            why = f"larger than {budget.max_file // 2**20} MB"
        if why:
            refused.append(f"{shown}: {why}")
            continue
        path = f"{prefix}/{raw}" if prefix else raw

        def read(info=info, shown=shown) -> bytes:
            try:
                with zf.open(info) as f:  # the header's size may lie: never read more than allowed
                    content = f.read(budget.max_file + 1)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, zlib.error) as e:
                raise _Refused(f"{shown}: unreadable ({e})") from None
            if len(content) > budget.max_file:
                raise _Refused(f"{shown}: larger than {budget.max_file // 2**20} MB")
            budget.take(len(content))
            return content

        if raw.lower().endswith(".zip"):
            if depth + 1 >= MAX_NESTING:
                refused.append(f"{shown}: an archive nested too deep")
                continue
            try:
                inner = read()
            except _Refused as e:
                refused.append(str(e))
                continue
            yield from _zip_entries(io.BytesIO(inner), path[:-4], budget, refused, depth + 1)
            continue
        yield _Entry(path, info.file_size, read)


class _Refused(Exception):
    """An entry found unsafe while reading it."""


def _folder_entries(top: Path, budget: _Budget, refused: list[str]) -> Iterator[_Entry]:
    count = 0
    for folder, dirs, files in os.walk(top, followlinks=False):
        here = Path(folder)
        for d in list(dirs):
            if (here / d).is_symlink():
                refused.append(f"{(here / d).relative_to(top).as_posix()}/: a symbolic link")
                dirs.remove(d)
        dirs.sort()
        for name in sorted(files):
            count += 1
            if count > MAX_ENTRIES:
                raise IntakeError(f"{top} holds more than {MAX_ENTRIES} files: refusing it")
            path = here / name
            rel = path.relative_to(top).as_posix()
            st = path.lstat()
            why = _unsafe(rel)
            if not why and stat.S_ISLNK(st.st_mode):
                why = "a symbolic link"
            elif not why and not stat.S_ISREG(st.st_mode):
                why = "not a regular file"
            elif not why and st.st_size > budget.max_file:
                why = f"larger than {budget.max_file // 2**20} MB"
            if why:
                refused.append(f"{rel}: {why}")
                continue

            def read(path=path, rel=rel) -> bytes:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a link swapped in since: refused by the OS
                with os.fdopen(fd, "rb") as f:
                    content = f.read(budget.max_file + 1)
                if len(content) > budget.max_file:
                    raise _Refused(f"{rel}: larger than {budget.max_file // 2**20} MB")
                budget.take(len(content))
                return content

            if name.lower().endswith(".zip"):
                try:
                    inner = read()
                except (_Refused, OSError) as e:
                    refused.append(str(e) if isinstance(e, _Refused) else f"{rel}: unreadable ({e})")
                    continue
                yield from _zip_entries(io.BytesIO(inner), rel[:-4], budget, refused, 1)
                continue
            yield _Entry(rel, st.st_size, read)


def _parse_time(text: str) -> datetime:
    """A timestamp group, in UTC without a zone: ``'2026-02-01-09-30-00'`` -> 2026-02-01 09:30:00.

    Dashed and compact forms and ISO 8601 are read exactly; anything else as
    nbgrader's ``parse_utc`` reads it (which takes ``-30`` in ``09-30-00`` for a zone).
    """
    for fmt in ("%Y-%m-%d-%H-%M-%S", "%Y-%m-%d_%H-%M-%S", "%Y%m%d%H%M%S", "%Y%m%dT%H%M%S"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        from nbgrader.utils import parse_utc

        return parse_utc(text)
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def default_download(root: str | os.PathLike, lab: str) -> Path:
    """nbgrader's ``zip_collect`` folder for ``lab``: ``downloaded/<lab>/archive`` (or as configured)."""
    cfg = course_config(root).ZipCollectApp
    return Path(root) / cfg.get("downloaded_directory", "downloaded") / lab / cfg.get("archive_directory", "archive")


def _default_pattern(root: Path) -> str:
    return course_config(root).FileNameCollectorPlugin.get("named_regexp", "") or DEFAULT_PATTERN


def _notebook_names(root: Path, lab: str) -> list[str]:
    for kind in ("release", "source"):
        found = sorted(p.stem for p in (course_folder(root, kind) / lab).glob("*.ipynb"))
        if found:
            return found
    return [lab]


def take_in(lab: str, download: str | os.PathLike | None = None, root: str | os.PathLike | None = None, *,
            pattern: str | None = None, submissions: str | os.PathLike | None = None,
            max_file_mb: float = 50, max_total_mb: float = 4096) -> Intake:
    """Lay out a bulk download of ``lab`` as ``submitted/<student>/<lab>/``.

    Args:
        lab: the assignment, e.g. ``"lab02_attention"``.
        download: a zip file or a folder (default: nbgrader's ``downloaded/<lab>/archive``).
        root: the course root (default: found from the current folder).
        pattern: the regular expression naming ``student`` (default: the course's
            ``FileNameCollectorPlugin.named_regexp``, else :data:`DEFAULT_PATTERN`).
        submissions: where to lay them out (default: the course's ``submitted/``).
        max_file_mb: larger files are refused.
        max_total_mb: a download holding more is refused as a whole.

    Raises :class:`IntakeError` when the download cannot be used at all.
    """
    root = find_root(root)
    if not LAB_NAME.match(lab):
        raise IntakeError(f"{lab!r} is not a lab's name (like lab02_attention)")
    download = Path(download) if download else default_download(root, lab)
    pattern = pattern or _default_pattern(root)
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise IntakeError(f"the pattern {pattern!r} is not a regular expression: {e}") from None
    group = next((g for g in ("student", "student_id") if g in regex.groupindex), None)
    if group is None:
        raise IntakeError(f"the pattern {pattern!r} has no group (?P<student>...) (or nbgrader's student_id)")
    if download.is_symlink() or not (download.is_dir() or download.is_file()):
        raise IntakeError(f"{download} is not a folder or a zip file")
    dest = Path(submissions) if submissions else course_folder(root, "submitted")
    report = Intake(lab=lab, dest=dest)
    budget = _Budget(int(max_file_mb * 2**20), int(max_total_mb * 2**20))
    entries = (_folder_entries(download, budget, report.refused) if download.is_dir()
               else _zip_entries(download, "", budget, report.refused, 0))
    notebooks = _notebook_names(root, lab)
    # (student, place in the lab folder) -> candidates (entry, timestamp)
    places: dict[tuple[str, str], list[tuple[_Entry, datetime | None]]] = {}
    for entry in entries:
        if CLUTTER.search(entry.path):
            report.ignored.append(entry.path)
            continue
        name = PurePosixPath(entry.path).name
        m = regex.match("/" + entry.path if "/" in pattern else name)
        if not m or not m.group(group):
            report.unmatched.append(entry.path)
            continue
        student = m.group(group)
        if not STUDENT_ID.match(student):
            report.refused.append(f"{entry.path}: the student id {student!r} has characters the grader refuses")
            continue
        file_id = (m.groupdict().get("file_id") or name).replace("\\", "/")
        when = None
        if m.groupdict().get("timestamp"):
            try:
                when = _parse_time(m.group("timestamp"))
            except (ValueError, OverflowError):
                report.refused.append(f"{entry.path}: cannot read the timestamp {m.group('timestamp')!r}")
                continue
        if name.lower().endswith(".ipynb"):
            stem = PurePosixPath(file_id).stem
            if len(notebooks) == 1:
                place = f"{notebooks[0]}.ipynb"
            elif stem in notebooks:
                place = f"{stem}.ipynb"
            else:
                report.unmatched.append(f"{entry.path} (names no notebook of {lab}: {notebooks})")
                continue
        else:
            place = file_id
            why = _unsafe(place)
            if why or place == "timestamp.txt" or place.lower().endswith(".ipynb"):
                report.refused.append(f"{entry.path}: {why or 'a name the grader reserves'}")
                continue
        places.setdefault((student, place), []).append((entry, when))

    chosen: dict[str, dict[str, tuple[_Entry, datetime | None]]] = {}
    for (student, place), candidates in sorted(places.items(), key=lambda kv: kv[0]):
        if len(candidates) > 1:
            if any(when is None for _, when in candidates):
                report.conflicts.setdefault(student, []).extend(e.path for e, _ in candidates)
                continue
            candidates = sorted(candidates, key=lambda c: c[1])
            report.superseded += [f"{e.path} (older than {candidates[-1][0].path})" for e, _ in candidates[:-1]]
        chosen.setdefault(student, {})[place] = candidates[-1]
    for student in report.conflicts:
        chosen.pop(student, None)

    for student, files in sorted(chosen.items()):
        content: dict[str, bytes] = {}
        try:
            for place, (entry, _) in files.items():
                content[place] = entry.read()
        except _Refused as e:
            report.refused.append(str(e))
            continue
        stamps = [when for _, when in files.values() if when is not None]
        if stamps:
            content["timestamp.txt"] = max(stamps).isoformat(" ").encode()
        if _write(dest / student, lab, content):
            report.students[student] = sorted(content)
        else:
            report.unchanged.append(student)
    return report


def _same(folder: Path, content: dict[str, bytes]) -> bool:
    if not folder.is_dir() or folder.is_symlink():
        return False
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    return present == set(content) and all(
        not (folder / k).is_symlink() and (folder / k).read_bytes() == v for k, v in content.items())


def _write(student_dir: Path, lab: str, content: dict[str, bytes]) -> bool:
    """Make ``student_dir/lab`` hold exactly ``content`` (swapped in whole); ``False`` when it already did."""
    target = student_dir / lab
    if _same(target, content):
        return False
    for folder in (student_dir.parent, student_dir, target):
        if folder.is_symlink():
            raise IntakeError(f"{folder} is a symbolic link: refusing to write through it")
    student_dir.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{lab}.intake-", dir=student_dir))
    try:
        for rel, data in content.items():
            path = fresh / rel
            if fresh.resolve() not in path.resolve().parents:
                raise IntakeError(f"{rel!r} would leave {fresh}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        fresh.chmod(0o755)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{lab}.old-", dir=student_dir))
            os.replace(target, old / lab)
            os.replace(fresh, target)
            shutil.rmtree(old)
        else:
            os.replace(fresh, target)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return True
