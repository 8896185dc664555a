"""The prose corpus: English paragraphs from Python's own documentation, the same on every machine.

The paragraphs come from two sources, in this order, each sorted:

* every topic of ``pydoc_data.topics.topics`` (the language reference and the
  built-in types as plain text, as ``help("while")`` shows it), as source
  ``"pydoc:<topic>"``;
* the docstrings (module, class, function) of about 100 well-documented
  standard-library modules (``_DOC_MODULES``), read with ``ast`` from the
  source files, so nothing is imported or executed, as source ``"doc:<file>"``.

Each text is cleaned by :func:`~course_utils.data.prose_cleaning.prose_paragraphs`;
a paragraph that occurs twice is kept once, at its first place.

That text differs between Python releases, even patch releases (3.11.2 and
3.11.7 give different BPE merges), so the corpus is read once, from CPython
3.11.7, and shipped frozen in ``snapshot/`` beside this module:

* ``prose.jsonl.gz``: the paragraphs in corpus order, one UTF-8 JSON object
  ``{"source": ..., "text": ...}`` a line, gzip-compressed (level 9, mtime 0,
  no file name, so the bytes depend only on the content and zlib);
* ``prose.provenance.json``: the Python it was read from, the source list, the
  date, the SHA-256 of the uncompressed lines (checked on every load), the
  counts and the command that re-makes it;
* ``LICENSE-PSF.txt``: the licence of that Python (the paragraphs are Python's
  documentation, copyright the Python Software Foundation, under the PSF
  License Agreement).

:func:`load_prose` and :func:`prose_text` read only the snapshot, on any
Python. To re-make the snapshot from the running interpreter (it then changes
unless that interpreter is CPython 3.11.7, and the shipped ``prose`` model
must be retrained with ``python -m course_utils.pretrain prose``)::

    python -m course_utils.data.prose --freeze            # rewrite snapshot/
    python -m course_utils.data.prose --freeze --out DIR  # write to DIR instead
    python -m course_utils.data.prose --check             # rebuild in memory, compare, exit 1 if different
"""

from __future__ import annotations

import argparse
import ast
import datetime
import gzip
import hashlib
import io
import json
import platform
import random
import shutil
import sys
import sysconfig
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import _check_fraction
from .prose_cleaning import prose_paragraphs

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

__all__ = ["load_prose", "prose_text", "build_prose", "read_snapshot", "freeze"]

SNAPSHOT_DIR = Path(__file__).with_name("snapshot")
"""The folder of the shipped snapshot."""
SNAPSHOT_NAME, PROVENANCE_NAME, LICENSE_NAME = "prose.jsonl.gz", "prose.provenance.json", "LICENSE-PSF.txt"
FREEZE_COMMAND = "python -m course_utils.data.prose --freeze"

Pairs = tuple[tuple[str, str], ...]  # (source, paragraph), in corpus order

# Well-documented standard-library modules (most docstring prose per line of
# code, none of those removed in Python 3.13); a missing file is skipped.
_DOC_MODULES = sorted("""
    _collections_abc _pydecimal _pyio _strptime _threading_local abc argparse ast base64 bdb bz2 calendar cmd
    code codecs codeop collections/__init__ concurrent/futures/_base configparser contextlib copy dataclasses
    datetime difflib doctest email/_encoded_words email/_header_value_parser email/_parseaddr email/_policybase
    email/base64mime email/charset email/generator email/header email/headerregistry email/message email/parser
    email/policy email/quoprimime email/utils enum fileinput fractions ftplib functools getopt graphlib gzip
    heapq hmac http/client http/cookiejar http/server imaplib inspect ipaddress json/__init__ json/decoder
    json/encoder logging/__init__ logging/handlers lzma mimetypes numbers optparse os pathlib pdb pkgutil
    platform poplib py_compile pyclbr queue random rlcompleter runpy sched shelve shutil site smtplib socket
    socketserver ssl statistics subprocess symtable tarfile tempfile textwrap threading timeit traceback turtle
    typing unittest/case unittest/mock urllib/parse uuid weakref zipfile
""".split())


# ---------------------------------------------------------------------------
# Building from the running interpreter
# ---------------------------------------------------------------------------

def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _docstring_files() -> list[Path]:
    root = _stdlib_root()
    return [root / f"{name}.py" for name in _DOC_MODULES if (root / f"{name}.py").is_file()]


def _docstrings(node: ast.AST) -> list[str]:
    """Docstrings of a module and of the classes and functions it defines, in source order.

    Only statements are visited (not expressions), which is much faster than ``ast.walk``.
    """
    docs = []
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node)
        if doc:
            docs.append(doc)
    for field in ("body", "orelse", "finalbody", "handlers"):
        for child in getattr(node, field, ()):
            if isinstance(child, (ast.stmt, ast.excepthandler)):
                docs += _docstrings(child)
    return docs


def build_prose(progress: bool = False) -> Pairs:
    """Read the corpus from the running interpreter: every ``(source, paragraph)`` pair, deduplicated, in order.

    This is what the snapshot freezes; it takes a few seconds (``progress`` shows
    a bar) and its result depends on the Python build. Use :func:`load_prose`
    or :func:`prose_text` for the shipped, fixed corpus.
    """
    from pydoc_data.topics import topics  # a dict: topic name -> plain text

    files = _docstring_files()
    if progress:  # tqdm only when asked: --check must run under a bare interpreter
        from tqdm.auto import tqdm

        files = tqdm(files, desc="reading stdlib docstrings")
    pairs = [(f"pydoc:{name}", p) for name in sorted(topics) for p in prose_paragraphs(topics[name])]
    root = _stdlib_root()
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue  # a missing or unparsable file is skipped
        source = "doc:" + path.relative_to(root).as_posix()
        for doc in _docstrings(tree):
            pairs += [(source, p) for p in prose_paragraphs(doc)]
    seen: set[str] = set()
    unique = []
    for source, para in pairs:
        if para not in seen:
            seen.add(para)
            unique.append((source, para))
    return tuple(unique)


# ---------------------------------------------------------------------------
# The snapshot format
# ---------------------------------------------------------------------------

def _encode(pairs: Pairs) -> bytes:
    """The uncompressed snapshot: one ``{"source": ..., "text": ...}`` JSON line per pair, UTF-8."""
    return "".join(json.dumps({"source": s, "text": t}, ensure_ascii=False) + "\n" for s, t in pairs).encode()


def _decode(payload: bytes) -> Pairs:
    """Inverse of :func:`_encode`."""
    rows = [json.loads(line) for line in payload.decode().splitlines()]
    return tuple((row["source"], row["text"]) for row in rows)


def _compress(payload: bytes) -> bytes:
    """gzip with level 9, mtime 0 and no file name: the same input gives the same bytes (for a given zlib)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as f:
        f.write(payload)
    return buffer.getvalue()


def read_snapshot(directory: str | Path = SNAPSHOT_DIR) -> Pairs:
    """The ``(source, paragraph)`` pairs of a snapshot folder, after checking them against its provenance.

    Raises ``ValueError`` when the SHA-256 of the uncompressed lines is not the recorded one.
    """
    directory = Path(directory)
    recorded = json.loads((directory / PROVENANCE_NAME).read_text(encoding="utf-8"))["sha256_uncompressed"]
    payload = gzip.decompress((directory / SNAPSHOT_NAME).read_bytes())
    digest = hashlib.sha256(payload).hexdigest()
    if digest != recorded:
        raise ValueError(f"{directory / SNAPSHOT_NAME} is damaged or was changed by hand: its content has "
                         f"SHA-256 {digest}, the provenance records {recorded}. Re-make it with {FREEZE_COMMAND}.")
    return _decode(payload)


def _provenance(pairs: Pairs, payload: bytes, compressed: bytes) -> dict[str, Any]:
    from pydoc_data.topics import topics

    root = _stdlib_root()
    return {
        "corpus": "course_utils.data.prose: English paragraphs of Python's documentation",
        "file": SNAPSHOT_NAME,
        "format": "gzip (level 9, mtime 0, no file name) of UTF-8 JSON lines {\"source\": ..., \"text\": ...}, "
                  "one paragraph a line, in corpus order",
        "python": {"implementation": platform.python_implementation(), "version": platform.python_version(),
                   "build": sys.version},
        "sources": {
            "pydoc_data.topics": f"all {len(topics)} topics, sorted by name (source 'pydoc:<topic>')",
            "stdlib_docstrings": [p.relative_to(root).as_posix() for p in _docstring_files()],
        },
        "paragraphs": len(pairs),
        "words": sum(len(t.split()) for _, t in pairs),
        "characters": sum(len(t) for _, t in pairs),
        "sha256_uncompressed": hashlib.sha256(payload).hexdigest(),
        "sha256_file": hashlib.sha256(compressed).hexdigest(),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "date": datetime.date.today().isoformat(),
        "command": FREEZE_COMMAND,
        "license": f"{LICENSE_NAME}: the LICENSE.txt of the Python above. The text is Python's documentation, "
                   "copyright the Python Software Foundation, distributed under the PSF License Agreement.",
    }


def freeze(directory: str | Path = SNAPSHOT_DIR, progress: bool = True) -> dict[str, Any]:
    """Build the corpus from the running interpreter and write a snapshot folder; returns the provenance.

    Writes ``prose.jsonl.gz``, ``prose.provenance.json`` and ``LICENSE-PSF.txt``
    (copied from the interpreter's ``LICENSE.txt``) into ``directory``.
    """
    license_file = _stdlib_root() / "LICENSE.txt"
    if not license_file.is_file():
        raise FileNotFoundError(f"this Python has no licence file at {license_file}; freeze the corpus with a "
                                "Python that ships one (its text must travel with the paragraphs)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pairs = build_prose(progress)
    payload = _encode(pairs)
    compressed = _compress(payload)
    provenance = _provenance(pairs, payload, compressed)
    (directory / SNAPSHOT_NAME).write_bytes(compressed)
    (directory / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    shutil.copyfile(license_file, directory / LICENSE_NAME)
    return provenance


# ---------------------------------------------------------------------------
# The corpus, from the snapshot
# ---------------------------------------------------------------------------

_PROSE: Pairs | None = None  # read once per process


def _all_prose(progress: bool = False) -> Pairs:
    """Every (source, paragraph) pair of the shipped corpus, in order (``progress`` is unused: loading is fast)."""
    global _PROSE
    if _PROSE is None:
        _PROSE = read_snapshot()
    return _PROSE


def _prose_split(seed: int, validation_fraction: float, progress: bool) -> dict[str, list[tuple[str, str]]]:
    _check_fraction("validation_fraction", validation_fraction)
    pairs = _all_prose(progress)
    n_val = max(1, round(len(pairs) * validation_fraction))
    val = set(random.Random(seed).sample(range(len(pairs)), n_val))
    return {"train": [p for i, p in enumerate(pairs) if i not in val],  # document order kept
            "validation": [p for i, p in enumerate(pairs) if i in val]}


def load_prose(split: str | None = None, seed: int = 0, validation_fraction: float = 0.1,
               progress: bool = True) -> "DatasetDict | Dataset":
    """English paragraphs from Python's own documentation, split into train and validation.

    Columns: ``"text"`` (one cleaned paragraph) and ``"source"`` (``"pydoc:<topic>"``
    or ``"doc:<file>"``). The validation paragraphs are a random sample
    (``random.Random(seed)``); both splits keep document order. The corpus is
    the snapshot shipped in the package (read from CPython 3.11.7, the same on
    every Python): about 0.91 MB, 149 k words, 6.4 k paragraphs, read on the
    first call and kept for later calls. ``progress`` is kept for compatibility
    (loading takes well under a second, no bar is shown).

    ``split=None`` returns a ``DatasetDict`` with ``"train"`` and ``"validation"``;
    ``split="train"`` or ``"validation"`` returns that ``Dataset``.
    """
    from datasets import Dataset, DatasetDict

    if split not in (None, "train", "validation"):
        raise ValueError(f"split must be None, 'train' or 'validation', got {split!r}")
    parts = _prose_split(seed, validation_fraction, progress)
    dd = DatasetDict({name: Dataset.from_dict({"text": [t for _, t in rows], "source": [s for s, _ in rows]})
                      for name, rows in parts.items()})
    return dd if split is None else dd[split]


def prose_text(split: str | None = "train", seed: int = 0, validation_fraction: float = 0.1,
               progress: bool = True) -> str:
    """One string of prose for tokenizer training: the split's paragraphs joined by blank lines.

    ``split=None`` joins every paragraph (train and validation, in document order).
    Same corpus and splits as :func:`load_prose`.
    """
    if split is None:
        return "\n\n".join(t for _, t in _all_prose(progress))
    if split not in ("train", "validation"):
        raise ValueError(f"split must be None, 'train' or 'validation', got {split!r}")
    return "\n\n".join(t for _, t in _prose_split(seed, validation_fraction, progress)[split])


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``--freeze [--out DIR]`` writes a snapshot; ``--check`` compares a fresh build with the shipped one."""
    parser = argparse.ArgumentParser(prog="python -m course_utils.data.prose", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--freeze", action="store_true", help="build from this Python and write the snapshot")
    action.add_argument("--check", action="store_true",
                        help="build from this Python and report whether it equals the shipped snapshot")
    parser.add_argument("--out", type=Path, default=SNAPSHOT_DIR, help=f"folder to write (default {SNAPSHOT_DIR})")
    args = parser.parse_args(argv)
    if args.freeze:
        p = freeze(args.out)
        print(f"wrote {args.out / SNAPSHOT_NAME}: {p['paragraphs']} paragraphs, {p['words']} words, "
              f"{p['characters']} characters from Python {p['python']['version']}, sha256 {p['sha256_uncompressed']}")
        return 0
    same = build_prose(progress=False) == read_snapshot()
    print(f"Python {platform.python_version()} {'reproduces' if same else 'does NOT reproduce'} the shipped snapshot "
          f"(made with Python {json.loads((SNAPSHOT_DIR / PROVENANCE_NAME).read_text())['python']['version']})")
    return 0 if same else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
