"""Offline corpora, synthetic tasks, batching and collators.

Everything here works without a network connection. Corpora come back as
Hugging Face ``datasets.Dataset`` objects (``datasets`` is imported inside the
functions, so ``import course_utils.data`` stays fast); batches come back as
dicts of tensors with Hugging Face names, so ``model(**batch)`` works.

Contents, top to bottom:

1. **Prose**: English paragraphs that every Python installation ships (the
   language reference in ``pydoc_data.topics`` plus standard-library
   docstrings), for training tokenizers and small language models.
2. **A world of facts**: real moons and planets, real cities and countries,
   fictional people; sentences, question/answer pairs and NER tags about them.
3. **Synthetic tasks**: associative recall (Ba et al. 2016, "Using Fast Weights
   to Attend to the Recent Past"; Arora et al. 2023, "Zoology"), copying,
   in-context learning as task identification (Xie et al. 2022, "An Explanation
   of In-context Learning as Implicit Bayesian Inference") and a toy
   translation task with reordering.
4. **Batching**: fixed-size blocks and random windows of a token stream (as in
   nanoGPT's ``get_batch``), and three collators: causal LM padding, BERT
   masking (Devlin et al. 2019, section 3.1) and T5 span corruption (Raffel
   et al. 2020, section 3.1.4; the ``random_spans_noise_mask`` algorithm of the
   T5 code base).
5. **The Hub**: ``load_hub_dataset`` fails at once, with advice, when offline.

Label convention (Hugging Face): ``labels`` are aligned with ``input_ids``;
the model shifts them internally and ignores positions set to ``-100``.
"""

from __future__ import annotations

import ast
import os
import random
import re
import socket
import sysconfig
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

__all__ = [
    # prose
    "load_prose",
    "prose_text",
    # facts
    "Fact",
    "facts_world",
    "facts_corpus",
    "facts_questions",
    "ner_dataset",
    "NER_LABELS",
    # synthetic tasks
    "associative_recall",
    "copy_task",
    "ICL_TASKS",
    "ICLTokenizer",
    "icl_tasks",
    "icl_eval_sets",
    "translate",
    "translation_pairs",
    # batching
    "causal_lm_blocks",
    "random_batch",
    "CausalLMCollator",
    "MaskedLMCollator",
    "random_spans_noise_mask",
    "span_corrupt",
    "SpanCorruptionCollator",
    # hub
    "load_hub_dataset",
]

IGNORE_INDEX = -100  # label value that the loss ignores (PyTorch and Hugging Face default)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_fraction(name: str, value: float, low_open: bool = True, high_open: bool = True) -> None:
    ok = (0 < value if low_open else 0 <= value) and (value < 1 if high_open else value <= 1)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value}")


# ---------------------------------------------------------------------------
# 1. Prose shipped with Python
# ---------------------------------------------------------------------------
# Sources, in this order, both sorted so the corpus is deterministic for a
# given Python version (the text itself changes between Python versions):
#   * every topic of ``pydoc_data.topics.topics`` (the language reference and
#     the built-in types, as plain text, as ``help("while")`` shows it);
#   * the docstrings (module, class, function) of about 100 well-documented
#     standard-library modules (``_DOC_MODULES``), read with ``ast`` from the
#     source files, so nothing is imported or executed.
# Cleaning keeps paragraphs of prose: headings, literal blocks (indented after
# a line ending with ":"), grammar rules, tables, doctest lines and
# symbol-heavy paragraphs are dropped; reST emphasis is removed, typographic
# quotes become ASCII, whitespace is collapsed. Duplicate paragraphs are kept
# once.

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
_UNDERLINE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")
_BULLET = re.compile(r"^(\s*)([*\-\u2022]|\d+\.|\(\d+\)|[a-z]\.)\s+")
_CODE_LINE = re.compile(
    r">>>|::=|^\s*\.\.\.|^\s*[|+][-=+|]|-{3,}|^\s*#|^\s*@\w"
    r"|^\s*[\w.]+\(.*\)\s*(->.*)?$"  # a bare call signature: name(args) -> result
    r"|^\s*[\w.\[\](), ]+\s=\s"  # an assignment: x = ...
    r"|^\s*(def|class|import|from|return|if|for|while|with|try|except)\b.*[:;(=]\s*$"
)
_LETTER = re.compile(r"[^\W\d_]")
_EMPHASIS = re.compile(r'(?<![\w"*])\*\*?(\w[^*"]*?)\*\*?(?![\w"*])')  # *emphasis*, **strong**
_ROLE = re.compile(r":[a-z:]+:`~?([^`]+)`")  # :role:`target`
_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`_?")  # ``literal``, `title`, `link`_
_FOOTNOTE = re.compile(r"\s\[\d+\]")  # footnote references " [1]"
_FIELD = re.compile(r"(?<!\S):(?:param|type|returns?|rtype|raises?|arg|key|keyword|ivar|var)\b[^:]*:\s*")  # :param x:
_HYPHEN_BREAK = re.compile(r"(?<=[A-Za-z]-) ")  # joining "quote-" and "delimited" lines leaves a space
_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": " - ",
                        "\u2026": "...", "\u00a0": " "})


def _blocks(text: str) -> list[list[str]]:
    """Split text into blank-line separated blocks of lines: ``"a\\n\\nb"`` -> ``[["a"], ["b"]]``."""
    blocks, block = [], []
    for line in text.expandtabs(8).splitlines():
        if line.strip():
            block.append(line.rstrip())
        elif block:
            blocks.append(block)
            block = []
    if block:
        blocks.append(block)
    return blocks


def _letter_ratio(text: str) -> float:
    """Share of letters among non-space characters: ``"ab+1"`` -> 0.5."""
    n_chars = len(text) - sum(text.count(c) for c in " \t\n")
    return len(_LETTER.findall(text)) / max(1, n_chars)


def _clean_inline(text: str) -> str:
    """Remove inline markup: ``'*field_name* and ``x``'`` -> ``'field_name and x'``."""
    text = text.translate(_ASCII)
    text = _EMPHASIS.sub(r"\1", text)
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(lambda m: m.group(1) or m.group(2), text)
    text = _FOOTNOTE.sub("", text)
    text = _FIELD.sub("", text)
    return " ".join(text.split())


def _prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a reST-like plain text, cleaned, in order."""
    out: list[str] = []
    body_indent, prev_colon, code_indent = 0, False, None
    for block in _blocks(text):
        indent = min(len(line) - len(line.lstrip(" ")) for line in block)
        if len(block) >= 2 and _UNDERLINE.match(block[-1]):  # a heading
            body_indent, prev_colon, code_indent = 0, False, None
            continue
        if code_indent is not None and indent >= code_indent:  # literal block goes on
            continue
        code_indent = None
        if prev_colon and indent > body_indent:  # "...as follows:" then an indented block
            code_indent = indent
            continue
        bullet = _BULLET.match(block[0])
        lines = [block[0][bullet.end():] if bullet else block[0]] + block[1:]
        body_indent = bullet.end() if bullet else indent
        joined = _HYPHEN_BREAK.sub("", " ".join(line.strip() for line in lines))
        prev_colon = joined.endswith(":")
        if any(_CODE_LINE.search(line) for line in lines):
            continue
        para = _clean_inline(joined)
        if len(para.split()) >= 6 and _letter_ratio(para) >= 0.78 and para[-1] in '.:?!)"':
            out.append(para)
    return out


def _docstring_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
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


_PROSE: tuple[tuple[str, str], ...] | None = None  # built once per process (about 2 s)


def _all_prose(progress: bool = False) -> tuple[tuple[str, str], ...]:
    """Every (source, paragraph) pair of the prose corpus, deduplicated, in a fixed order."""
    global _PROSE
    if _PROSE is None:
        _PROSE = _build_prose(progress)
    return _PROSE


def _build_prose(progress: bool) -> tuple[tuple[str, str], ...]:
    from pydoc_data.topics import topics  # a dict: topic name -> plain text
    from tqdm.auto import tqdm

    pairs = [(f"pydoc:{name}", p) for name in sorted(topics) for p in _prose_paragraphs(topics[name])]
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in tqdm(_docstring_files(), desc="reading stdlib docstrings", disable=not progress):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue  # a missing or unparsable file is skipped
        source = "doc:" + path.relative_to(root).as_posix()
        for doc in _docstrings(tree):
            pairs += [(source, p) for p in _prose_paragraphs(doc)]
    seen: set[str] = set()
    unique = []
    for source, para in pairs:
        if para not in seen:
            seen.add(para)
            unique.append((source, para))
    return tuple(unique)


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
    (``random.Random(seed)``); both splits keep document order. On Python 3.11
    the corpus is about 0.91 MB, 149 k words, 6.4 k paragraphs; the first call
    reads the standard library (a few seconds, ``progress`` shows a bar), later
    calls reuse it.

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
    """
    if split is None:
        return "\n\n".join(t for _, t in _all_prose(progress))
    if split not in ("train", "validation"):
        raise ValueError(f"split must be None, 'train' or 'validation', got {split!r}")
    return "\n\n".join(t for _, t in _prose_split(seed, validation_fraction, progress)[split])


# ---------------------------------------------------------------------------
# 2. A small world of facts
# ---------------------------------------------------------------------------
# Moons are real (IAU names); cities are real and in the right countries;
# people are fictional (a first name and a surname drawn at random).

_MOONS = {  # planet -> some of its moons
    "Earth": ["the Moon"],
    "Mars": ["Phobos", "Deimos"],
    "Jupiter": ["Io", "Europa", "Ganymede", "Callisto", "Amalthea", "Himalia", "Thebe", "Metis"],
    "Saturn": ["Titan", "Enceladus", "Mimas", "Tethys", "Dione", "Rhea", "Iapetus", "Hyperion", "Phoebe", "Janus"],
    "Uranus": ["Miranda", "Ariel", "Umbriel", "Titania", "Oberon", "Puck"],
    "Neptune": ["Triton", "Nereid", "Proteus", "Larissa"],
}
_CITIES = {  # country -> some of its cities
    "Argentina": ["Buenos Aires", "Rosario"], "Australia": ["Sydney", "Melbourne", "Perth"],
    "Brazil": ["Rio de Janeiro", "Recife"], "Canada": ["Toronto", "Montreal", "Vancouver"],
    "China": ["Beijing", "Shanghai"], "Egypt": ["Cairo", "Alexandria"], "France": ["Paris", "Lyon", "Marseille"],
    "Germany": ["Berlin", "Hamburg", "Munich"], "Greece": ["Athens", "Thessaloniki"],
    "India": ["Mumbai", "New Delhi", "Chennai"], "Ireland": ["Dublin", "Cork"], "Italy": ["Rome", "Milan", "Naples"],
    "Japan": ["Tokyo", "Osaka", "Kyoto"], "Kenya": ["Nairobi", "Mombasa"], "Mexico": ["Mexico City", "Guadalajara"],
    "Morocco": ["Casablanca", "Marrakesh"], "New Zealand": ["Auckland", "Wellington"], "Nigeria": ["Lagos", "Abuja"],
    "Norway": ["Oslo", "Bergen"], "Peru": ["Lima", "Cusco"], "Poland": ["Warsaw", "Krakow"],
    "Portugal": ["Lisbon", "Porto"], "South Africa": ["Cape Town", "Johannesburg"], "South Korea": ["Seoul", "Busan"],
    "Spain": ["Madrid", "Barcelona", "Seville"], "Sweden": ["Stockholm", "Gothenburg"],
    "Thailand": ["Bangkok", "Chiang Mai"], "Turkey": ["Istanbul", "Ankara"], "Vietnam": ["Hanoi", "Da Nang"],
}
_FIRST_NAMES = ["Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Grace", "Hiroshi", "Ines", "Jonas", "Kofi",
                "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Samir", "Tove", "Umar", "Vera",
                "Wei", "Ximena", "Yusuf", "Zara"]
_SURNAMES = ["Almeida", "Brandt", "Castellano", "Duarte", "Eriksen", "Fontaine", "Greaves", "Hollis", "Ivanova",
             "Jansen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quist", "Rinaldi", "Sato",
             "Tanaka", "Ueda", "Varga", "Whitlock", "Yilmaz", "Zielinski"]
_JOBS = ["accountant", "architect", "astronomer", "baker", "carpenter", "chemist", "dentist", "doctor",
         "electrician", "engineer", "farmer", "gardener", "journalist", "lawyer", "librarian", "musician", "nurse",
         "painter", "photographer", "pilot", "plumber", "teacher", "translator", "veterinarian"]

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ASTRO", "I-ASTRO"]
"""BIO labels of :func:`ner_dataset`: PER people, LOC cities and countries, ASTRO moons and planets."""

# Templates: {s} subject, {o} object, {a_o} object with its article ("an engineer").
_SENTENCES = {
    "moon_of": ["{s} is a moon of {o}.", "{s} orbits {o}.", "{o} has a moon called {s}.",
                "{s} is one of the moons of {o}."],
    "city_in": ["{s} is a city in {o}.", "{s} is in {o}.", "{s} lies in {o}."],
    "lives_in": ["{s} lives in {o}.", "{s} comes from {o}.", "The home town of {s} is {o}."],
    "works_as": ["{s} works as {a_o}.", "{s} is {a_o}.", "The job of {s} is {o}."],
}
_QUESTIONS = {
    "moon_of": ["Which planet does {s} orbit?", "What planet is {s} a moon of?"],
    "city_in": ["Where is {s}?", "In which country is {s}?"],
    "lives_in": ["Where does {s} live?", "In which city does {s} live?"],
    "works_as": ["What is the job of {s}?", "What does {s} do for a living?"],
    "lives_in_country": ["In which country does {s} live?"],  # two hops: person -> city -> country
}
_TOKEN = re.compile(r"'s\b|\w+(?:-\w+)*|[^\w\s]")  # words, "'s", single punctuation marks


@dataclass(frozen=True)
class Fact:
    """One fact: ``Fact("Ganymede", "moon_of", "Jupiter", "ASTRO", "ASTRO")``.

    relation is ``"moon_of"``, ``"city_in"``, ``"lives_in"`` or ``"works_as"``;
    the types are ``"ASTRO"``, ``"LOC"``, ``"PER"`` or ``"JOB"`` (jobs are not entities).
    """

    subject: str
    relation: str
    object: str
    subject_type: str
    object_type: str


def facts_world(seed: int = 0, n_people: int = 40) -> list[Fact]:
    """The facts of a small world, in a fixed order: moons, then cities, then people.

    Moons and cities are real and always the same; ``n_people`` fictional
    people get a distinct name, a home town and a job from ``random.Random(seed)``.
    Example: ``Fact("Ganymede", "moon_of", "Jupiter", "ASTRO", "ASTRO")`` is always there.
    """
    max_people = len(_FIRST_NAMES) * len(_SURNAMES)
    _check_int("n_people", n_people, 0)
    if n_people > max_people:
        raise ValueError(f"n_people must be <= {max_people}, got {n_people}")
    rng = random.Random(seed)
    facts = [Fact(m, "moon_of", p, "ASTRO", "ASTRO") for p, moons in _MOONS.items() for m in moons]
    facts += [Fact(c, "city_in", k, "LOC", "LOC") for k, cities in _CITIES.items() for c in cities]
    cities = [c for cs in _CITIES.values() for c in cs]
    names = rng.sample([f"{f} {s}" for f in _FIRST_NAMES for s in _SURNAMES], n_people)
    for name in names:
        facts.append(Fact(name, "lives_in", rng.choice(cities), "PER", "LOC"))
        facts.append(Fact(name, "works_as", rng.choice(_JOBS), "PER", "JOB"))
    return facts


def _entity_tokens(name: str, kind: str, sentence_start: bool) -> list[tuple[str, str]]:
    """Tokens and BIO tags of one filled slot: ``("the Moon", "ASTRO")`` -> ``[("the","O"), ("Moon","B-ASTRO")]``."""
    if sentence_start:
        name = name[0].upper() + name[1:]
    words = _TOKEN.findall(name)
    article = 1 if words[0].lower() == "the" and kind != "JOB" else 0
    out = [(w, "O") for w in words[:article]]
    for i, w in enumerate(words[article:]):
        out.append((w, "O" if kind == "JOB" else ("B-" if i == 0 else "I-") + kind))
    return out


def _render(template: str, fact: Fact) -> tuple[str, list[str], list[str]]:
    """Fill a template: returns (sentence, tokens, BIO tags), the tokens being exactly those of the sentence."""
    article = "an" if fact.object[0] in "aeiou" else "a"
    slots = {"s": (fact.subject, fact.subject_type), "o": (fact.object, fact.object_type),
             "a_o": (f"{article} {fact.object}", fact.object_type)}
    text, pairs = "", []
    for piece in re.split(r"(\{\w+\})", template):
        if piece.startswith("{"):
            value, kind = slots[piece[1:-1]]
            pairs += _entity_tokens(value, kind, sentence_start=text == "")
            text += value[0].upper() + value[1:] if text == "" else value
        elif piece:
            pairs += [(w, "O") for w in _TOKEN.findall(piece)]
            text += piece
    return text, [w for w, _ in pairs], [t for _, t in pairs]


def _world_or_default(world: list[Fact] | None, seed: int) -> list[Fact]:
    if world is None:
        return facts_world(seed)
    if not all(isinstance(f, Fact) for f in world):
        raise TypeError("world must be a list of Fact, as returned by facts_world()")
    return list(world)


def _sentences(world: list[Fact], seed: int, templates_per_fact: int | None, shuffle: bool) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for fact in world:
        templates = list(enumerate(_SENTENCES[fact.relation]))
        if templates_per_fact is not None:
            _check_int("templates_per_fact", templates_per_fact, 1)
            templates = rng.sample(templates, min(templates_per_fact, len(templates)))
        for index, template in templates:
            text, tokens, tags = _render(template, fact)
            rows.append({"text": text, "tokens": tokens, "tags": tags, "relation": fact.relation,
                         "subject": fact.subject, "object": fact.object, "template": index})
    if shuffle:
        rng.shuffle(rows)
    return rows


def facts_corpus(world: list[Fact] | None = None, seed: int = 0, templates_per_fact: int | None = None,
                 shuffle: bool = True) -> "Dataset":
    """Sentences stating each fact with several templates: "Ganymede orbits Jupiter."

    Columns: ``text``, ``relation``, ``subject``, ``object``, ``template`` (index
    of the template used). ``templates_per_fact=None`` uses every template; an
    int samples that many per fact (to hold paraphrases out). ``world`` defaults
    to ``facts_world(seed)``.
    """
    from datasets import Dataset

    rows = _sentences(_world_or_default(world, seed), seed, templates_per_fact, shuffle)
    keys = ["text", "relation", "subject", "object", "template"]
    return Dataset.from_dict({k: [r[k] for r in rows] for k in keys})


def facts_questions(world: list[Fact] | None = None, seed: int = 0, two_hop: bool = True,
                    shuffle: bool = True) -> "Dataset":
    """Question/answer pairs about the facts: "Which planet does Ganymede orbit?" / "Jupiter".

    Columns: ``question``, ``answer``, ``prompt`` (``"Q: <question> A:"``),
    ``text`` (``"Q: <question> A: <answer>"``), ``relation``, ``subject``.
    With ``two_hop=True`` it adds "In which country does <person> live?",
    answerable only by chaining two facts (relation ``"lives_in_country"``).
    """
    from datasets import Dataset

    world = _world_or_default(world, seed)
    country_of = {f.subject: f.object for f in world if f.relation == "city_in"}
    triples = [(f.relation, f.subject, f.object) for f in world]
    if two_hop:
        triples += [("lives_in_country", f.subject, country_of[f.object])
                    for f in world if f.relation == "lives_in" and f.object in country_of]
    rows = []
    for relation, subject, answer in triples:
        for template in _QUESTIONS[relation]:
            question = template.format(s=subject)
            question = question[0].upper() + question[1:]
            rows.append({"question": question, "answer": answer, "prompt": f"Q: {question} A:",
                         "text": f"Q: {question} A: {answer}", "relation": relation, "subject": subject})
    if shuffle:
        random.Random(seed).shuffle(rows)
    return Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]} if rows else {"question": []})


def ner_dataset(world: list[Fact] | None = None, seed: int = 0, templates_per_fact: int | None = None,
                shuffle: bool = True) -> "Dataset":
    """Named-entity tags for the sentences of :func:`facts_corpus` (same arguments, same order).

    Columns: ``text``, ``tokens`` (words and punctuation), ``tags`` (BIO strings
    from :data:`NER_LABELS`) and ``tag_ids`` (their indices). The tags are exact:
    they come from the template slots, not from a tagger.
    Example: "Ganymede orbits Jupiter." -> tokens ``["Ganymede", "orbits", "Jupiter", "."]``,
    tags ``["B-ASTRO", "O", "B-ASTRO", "O"]``.
    """
    from datasets import Dataset

    rows = _sentences(_world_or_default(world, seed), seed, templates_per_fact, shuffle)
    index = {label: i for i, label in enumerate(NER_LABELS)}
    return Dataset.from_dict({"text": [r["text"] for r in rows], "tokens": [r["tokens"] for r in rows],
                              "tags": [r["tags"] for r in rows],
                              "tag_ids": [[index[t] for t in r["tags"]] for r in rows]})


# ---------------------------------------------------------------------------
# 3. Synthetic tasks
# ---------------------------------------------------------------------------

def associative_recall(n_samples: int, n_pairs: int = 8, vocab_size: int = 64, seed: int = 0) -> "Dataset":
    """Key-value pairs followed by a query key; the target is the query's value.

    Token layout (length ``2 * n_pairs + 1``)::

        k_1 v_1 k_2 v_2 ... k_n v_n q        target = v_i where k_i == q

    Keys are ids in ``[0, vocab_size // 2)``, distinct within a sequence; values
    are ids in ``[vocab_size // 2, vocab_size)``, drawn with replacement; ``q``
    is one of the keys. Columns: ``input_ids`` and ``target`` (an int). For a
    causal LM, read the prediction at the last position:
    ``cross_entropy(logits[:, -1], target)``.
    Example (vocab 8): ``[1, 5, 3, 4, 1]`` -> target 5.
    """
    from datasets import Dataset

    _check_int("n_samples", n_samples, 1)
    _check_int("n_pairs", n_pairs, 1)
    _check_int("vocab_size", vocab_size, 2)
    n_keys = vocab_size // 2
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs must be <= vocab_size // 2 = {n_keys} (keys are distinct), got {n_pairs}")
    rng = random.Random(seed)
    inputs, targets = [], []
    for _ in range(n_samples):
        keys = rng.sample(range(n_keys), n_pairs)
        values = [rng.randrange(n_keys, vocab_size) for _ in keys]
        i = rng.randrange(n_pairs)
        inputs.append([t for kv in zip(keys, values) for t in kv] + [keys[i]])
        targets.append(values[i])
    return Dataset.from_dict({"input_ids": inputs, "target": targets})


def copy_task(n_samples: int, length: int = 16, vocab_size: int = 16, seed: int = 0) -> "Dataset":
    """Copy a random sequence after a separator.

    Token layout (length ``2 * length + 1``)::

        x_1 ... x_L SEP x_1 ... x_L

    Symbols are ids ``0 .. vocab_size - 2``; ``SEP = vocab_size - 1``. Columns:
    ``input_ids`` (the whole sequence), ``labels`` (``-100`` on ``x`` and ``SEP``,
    then the copy, for a causal LM) and ``target`` (``x``, for an encoder-decoder).
    Example (vocab 4, length 2): input ``[2, 0, 3, 2, 0]``, labels ``[-100, -100, -100, 2, 0]``.
    """
    from datasets import Dataset

    _check_int("n_samples", n_samples, 1)
    _check_int("length", length, 1)
    _check_int("vocab_size", vocab_size, 2)
    rng = random.Random(seed)
    sep = vocab_size - 1
    xs = [[rng.randrange(sep) for _ in range(length)] for _ in range(n_samples)]
    return Dataset.from_dict({"input_ids": [x + [sep] + x for x in xs],
                              "labels": [[IGNORE_INDEX] * (length + 1) + x for x in xs], "target": xs})


# In-context learning as task identification: six mappings on 20 symbols.
ICL_TASKS: dict[str, Callable[[int], int]] = {
    "identity": lambda x: x,
    "plus_one": lambda x: (x + 1) % 20,
    "minus_one": lambda x: (x - 1) % 20,
    "mirror": lambda x: 19 - x,
    "plus_five": lambda x: (x + 5) % 20,
    "double": lambda x: (2 * x) % 20,
}


class ICLTokenizer:
    """The 24-token vocabulary of the in-context learning sequences.

    ids 0..19 are the symbols ``a`` .. ``t``; 20 is ``->``, 21 is ``;``, 22 is
    ``<bos>``, 23 is ``<pad>``. Text is space-separated:
    ``encode("a -> b ; c ->")`` -> ``[22, 0, 20, 1, 21, 2, 20]``.
    """

    symbols = "abcdefghijklmnopqrst"
    arrow_id, sep_id, bos_id, pad_id = 20, 21, 22, 23
    vocab_size = 24

    def __init__(self) -> None:
        self.itos = list(self.symbols) + ["->", ";", "<bos>", "<pad>"]
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """``"a -> b"`` -> ``[22, 0, 20, 1]`` (``add_bos=False``: ``[0, 20, 1]``)."""
        ids = [self.bos_id] if add_bos else []
        for token in text.split():
            if token not in self.stoi:
                raise ValueError(f"text contains unknown token {token!r}; expected one of {self.itos}")
            ids.append(self.stoi[token])
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """``[22, 0, 20, 1]`` -> ``"a -> b"``; ``<bos>``/``<pad>`` are dropped unless ``skip_special=False``."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids must be in [0, {self.vocab_size}), got {bad[:5]}")
        return " ".join(self.itos[i] for i in ids if not (skip_special and i >= self.bos_id))


def _icl_is_eval(prompt: list[int]) -> bool:
    """Held-out rule: a prompt with k >= 1 examples belongs to the evaluation split when
    ``crc32(bytes(prompt)) % 10 < 2`` (a fixed 20 % of all possible prompts)."""
    return len(prompt) > 3 and zlib.crc32(bytes(prompt)) % 10 < 2


def _icl_rows(n_samples: int, ks: Callable[[random.Random], int], seed: int, split: str,
              tasks: Sequence[str] | None) -> dict[str, list]:
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    names = list(ICL_TASKS) if tasks is None else list(tasks)
    unknown = [t for t in names if t not in ICL_TASKS]
    if unknown or not names:
        raise ValueError(f"tasks must be a non-empty subset of {list(ICL_TASKS)}, got {tasks!r}")
    tok, rng = ICLTokenizer(), random.Random(f"icl-{split}-{seed}")
    cols: dict[str, list] = {c: [] for c in
                             ("input_ids", "labels", "prompt_ids", "target", "text", "answer", "task", "k")}
    attempts = 0
    while len(cols["k"]) < n_samples:
        attempts += 1
        if attempts > 100 * n_samples + 1000:  # about 5 tries per sample are expected (a 20 % eval share)
            raise RuntimeError(f"could not draw {n_samples} {split!r} prompts; is the held-out rule broken?")
        task, k = rng.choice(names), ks(rng)
        f = ICL_TASKS[task]
        xs = rng.sample(range(20), k + 1)  # distinct examples, then a query not among them
        query = xs[-1]
        prompt = [tok.bos_id]
        for x in xs[:-1]:
            prompt += [x, tok.arrow_id, f(x), tok.sep_id]
        prompt += [query, tok.arrow_id]
        if k > 0 and _icl_is_eval(prompt) != (split == "eval"):
            continue  # belongs to the other split
        full = prompt + [f(query)]
        answer_positions = {1 + 4 * i + 2 for i in range(k)} | {len(full) - 1}
        cols["input_ids"].append(full)
        cols["labels"].append([t if i in answer_positions else IGNORE_INDEX for i, t in enumerate(full)])
        cols["prompt_ids"].append(prompt)
        cols["target"].append(f(query))
        cols["text"].append(tok.decode(prompt))
        cols["answer"].append(tok.itos[f(query)])
        cols["task"].append(task)
        cols["k"].append(k)
    return cols


def icl_tasks(n_samples: int, k: int | None = None, max_k: int = 8, seed: int = 0, split: str = "train",
              tasks: Sequence[str] | None = None) -> "Dataset":
    """In-context learning sequences: k examples ``x -> f(x)`` of an unnamed task, then a query.

    Token layout (see :class:`ICLTokenizer`), prompt length ``4 * k + 3``::

        <bos> x_1 -> y_1 ; ... ; x_k -> y_k ; x_q ->        target = f(x_q)

    The task is drawn uniformly from :data:`ICL_TASKS`; ``k`` is fixed, or drawn
    uniformly from ``0..max_k`` when ``k=None``; the ``k + 1`` symbols are
    distinct, so the query is never among the examples. Text form (no
    ``<bos>``): zero-shot ``"e ->"``, one-shot ``"a -> b ; e ->"``.

    Columns: ``input_ids`` (prompt + target, for training), ``labels`` (every
    ``y_i`` and the target, ``-100`` elsewhere), ``prompt_ids``, ``target``,
    ``text`` (the prompt), ``answer`` (the target symbol), ``task``, ``k``.
    Held-out split: every prompt with ``k >= 1`` belongs to exactly one of
    ``"train"`` and ``"eval"`` (a fixed hash rule, 20 % eval), so evaluation
    prompts never occur as training prompts (zero-shot prompts, of which
    only 20 exist, are shared).
    """
    from datasets import Dataset

    _check_int("n_samples", n_samples, 1)
    _check_int("max_k", max_k, 0)
    if max_k > 19:
        raise ValueError(f"max_k must be <= 19 (20 symbols, one kept for the query), got {max_k}")
    if k is not None:
        _check_int("k", k, 0)
        if k > 19:
            raise ValueError(f"k must be <= 19 (20 symbols, one kept for the query), got {k}")
    draw_k = (lambda rng: k) if k is not None else (lambda rng: rng.randint(0, max_k))
    return Dataset.from_dict(_icl_rows(n_samples, draw_k, seed, split, tasks))


def icl_eval_sets(ks: Sequence[int] = tuple(range(9)), n_per_k: int = 600, seed: int = 0,
                  tasks: Sequence[str] | None = None) -> dict[int, "Dataset"]:
    """Held-out evaluation sets, one per number of shots: ``{k: icl_tasks(n_per_k, k, split="eval")}``.

    Within a set every prompt has the same length, so ``torch.tensor(ds["prompt_ids"])``
    is a ``(n_per_k, 4k + 3)`` batch and accuracy is
    ``(logits[:, -1].argmax(-1) == target).float().mean()``.
    """
    return {k: icl_tasks(n_per_k, k=k, seed=seed + 1000 * k, split="eval", tasks=tasks) for k in ks}


# Toy translation: English -> a made-up language. Word-by-word lexicon plus two
# reordering rules: adjectives follow their noun, and the verb goes last (SOV).
_LEXICON = {
    "the": "lo", "a": "un",
    "big": "mavo", "small": "tini", "red": "karu", "old": "velo", "happy": "sulo", "blue": "azu",
    "fast": "zumi", "quiet": "nalu",
    "dog": "vek", "cat": "miro", "bird": "pita", "fish": "nako", "child": "lemi", "teacher": "doru",
    "horse": "kavo", "farmer": "turo",
    "sees": "vidu", "likes": "amo", "follows": "seku", "finds": "trovi", "helps": "helpa", "chases": "kura",
}
_DETS, _ADJS = ["the", "a"], ["big", "small", "red", "old", "happy", "blue", "fast", "quiet"]
_NOUNS = ["dog", "cat", "bird", "fish", "child", "teacher", "horse", "farmer"]
_VERBS = ["sees", "likes", "follows", "finds", "helps", "chases"]


def translate(sentence: str) -> str:
    """Translate one toy English sentence ``DET [ADJ] NOUN VERB DET [ADJ] NOUN``.

    Example: ``"the big dog sees a small cat"`` -> ``"lo vek mavo un miro tini vidu"``.
    """
    words = sentence.split()
    unknown = [w for w in words if w not in _LEXICON]
    if unknown:
        raise ValueError(f"sentence has words outside the lexicon: {unknown}")
    verbs = [i for i, w in enumerate(words) if w in _VERBS]
    if len(verbs) != 1:
        raise ValueError(f"sentence must contain exactly one verb, got {sentence!r}")

    def phrase(ws: list[str]) -> list[str]:  # DET [ADJ] NOUN -> DET NOUN [ADJ]
        if not (2 <= len(ws) <= 3 and ws[0] in _DETS and ws[-1] in _NOUNS and all(w in _ADJS for w in ws[1:-1])):
            raise ValueError(f"noun phrase must be DET [ADJ] NOUN, got {' '.join(ws)!r}")
        return [ws[0], ws[-1]] + ws[1:-1]

    v = verbs[0]
    out = phrase(words[:v]) + phrase(words[v + 1:]) + [words[v]]
    return " ".join(_LEXICON[w] for w in out)


def translation_pairs(n: int, seed: int = 0, adjective_probability: float = 0.5) -> "Dataset":
    """``n`` random sentence pairs (columns ``source``, ``target``) for the encoder-decoder.

    Each noun phrase gets an adjective with ``adjective_probability``. See
    :func:`translate` for the rules; the reordering means the decoder must
    attend to positions other than its own.
    """
    from datasets import Dataset

    _check_int("n", n, 1)
    _check_fraction("adjective_probability", adjective_probability, low_open=False, high_open=False)
    rng = random.Random(seed)

    def phrase() -> list[str]:
        adj = [rng.choice(_ADJS)] if rng.random() < adjective_probability else []
        return [rng.choice(_DETS)] + adj + [rng.choice(_NOUNS)]

    sources = [" ".join(phrase() + [rng.choice(_VERBS)] + phrase()) for _ in range(n)]
    return Dataset.from_dict({"source": sources, "target": [translate(s) for s in sources]})


# ---------------------------------------------------------------------------
# 4. Batching and collators
# ---------------------------------------------------------------------------

def _as_long_1d(name: str, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    t = ids if isinstance(ids, torch.Tensor) else torch.tensor(list(ids), dtype=torch.long)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {t.dtype}")
    return t.long()


def causal_lm_blocks(ids: Sequence[int] | torch.Tensor, block_size: int, stride: int | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Cut a token stream into blocks of ``block_size``, shape ``(N, block_size)``; a short tail is dropped.

    ``stride`` (default ``block_size``: no overlap) is the step between block starts.
    Example: ``causal_lm_blocks(range(10), 4)`` -> ``[[0, 1, 2, 3], [4, 5, 6, 7]]``.
    """
    t = _as_long_1d("ids", ids)
    _check_int("block_size", block_size, 1)
    stride = block_size if stride is None else stride
    _check_int("stride", stride, 1)
    if len(t) < block_size:
        raise ValueError(f"ids must hold at least block_size={block_size} tokens, got {len(t)}")
    blocks = t.unfold(0, block_size, stride)  # (N, block_size)
    return blocks.contiguous().to(device if device is not None else t.device)


def random_batch(data: Sequence[int] | torch.Tensor, block_size: int, batch_size: int,
                 generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Random windows of a token stream, nanoGPT style: ``{"input_ids": (B, T), "labels": (B, T)}``.

    Each row is ``data[i : i + block_size]`` for a uniform random start ``i``;
    ``labels`` is a copy of ``input_ids`` (the model shifts internally, HF convention).
    """
    t = _as_long_1d("data", data)
    _check_int("block_size", block_size, 1)
    _check_int("batch_size", batch_size, 1)
    if len(t) < block_size:
        raise ValueError(f"data must hold at least block_size={block_size} tokens, got {len(t)}")
    starts = torch.randint(len(t) - block_size + 1, (batch_size,), generator=generator)  # (B,)
    x = t[starts.to(t.device)[:, None] + torch.arange(block_size, device=t.device)]  # (B, T)
    x = x.to(device if device is not None else t.device)
    return {"input_ids": x, "labels": x.clone()}


def _examples(name: str, examples: Any) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Normalise a batch to ``[(input_ids, labels or None), ...]`` of 1-D long tensors."""
    if isinstance(examples, torch.Tensor):
        if examples.dim() != 2:
            raise ValueError(f"{name} as a tensor must be (B, T), got shape {tuple(examples.shape)}")
        examples = list(examples)
    if not isinstance(examples, Sequence) or len(examples) == 0:
        raise ValueError(f"{name} must be a non-empty list of sequences or of dicts with 'input_ids'")
    out = []
    for ex in examples:
        if isinstance(ex, Mapping):
            ids = _as_long_1d("input_ids", ex["input_ids"])
            labels = _as_long_1d("labels", ex["labels"]) if ex.get("labels") is not None else None
            if labels is not None and len(labels) != len(ids):
                raise ValueError(f"labels must have the length of input_ids ({len(ids)}), got {len(labels)}")
        else:
            ids, labels = _as_long_1d("input_ids", ex), None
        if len(ids) == 0:
            raise ValueError(f"{name} contains an empty sequence")
        out.append((ids, labels))
    return out


def _pad(seqs: list[torch.Tensor], value: int, side: str = "right") -> torch.Tensor:
    """Stack 1-D tensors into ``(B, T_max)``: ``[[1, 2], [3]]`` with value 0 -> ``[[1, 2], [3, 0]]``."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            out[i, :len(s)] = s
        else:
            out[i, width - len(s):] = s
    return out


class CausalLMCollator:
    """Pad variable-length sequences for a causal LM.

    Input: a list of token-id sequences, or of dicts with ``"input_ids"`` and
    optional ``"labels"`` (then those labels are kept, e.g. ``-100`` on a prompt).
    Output: ``input_ids`` ``(B, T)`` padded with ``pad_token_id``,
    ``attention_mask`` ``(B, T)`` (1 = real token), ``labels`` ``(B, T)`` (a copy
    of ``input_ids``, or the given labels, with ``-100`` on padding). Padding is
    found from lengths, never by comparing with ``pad_token_id``, so a pad id
    that is also a real token (GPT-2's EOS) is still learned.
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right",
                 device: torch.device | str | None = None) -> None:
        _check_int("pad_token_id", pad_token_id, 0)
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.pad_token_id, self.padding_side, self.device = pad_token_id, padding_side, device

    def __call__(self, examples: Any) -> dict[str, torch.Tensor]:
        items = _examples("examples", examples)
        ids = [i for i, _ in items]
        labels = [lab if lab is not None else i for i, lab in items]
        batch = {"input_ids": _pad(ids, self.pad_token_id, self.padding_side),
                 "attention_mask": _pad([torch.ones_like(i) for i in ids], 0, self.padding_side),
                 "labels": _pad(labels, IGNORE_INDEX, self.padding_side)}
        return {k: v.to(self.device) if self.device is not None else v for k, v in batch.items()}


class MaskedLMCollator:
    """BERT masking: pad a batch, then corrupt ``mlm_probability`` of the eligible tokens.

    Eligible tokens are real (not padding) and not in ``special_token_ids``
    (the pad id always counts as special). Each is chosen independently with
    probability ``mlm_probability``; of the chosen, 80 % become ``mask_token_id``,
    10 % a uniform random id in ``[0, vocab_size)`` (as in BERT and Hugging Face,
    specials included, and possibly the same id), 10 % stay unchanged.
    Output: ``input_ids``, ``labels`` (original id where chosen, ``-100``
    elsewhere) and ``attention_mask``, each ``(B, T)``.
    """

    def __init__(self, vocab_size: int, mask_token_id: int, pad_token_id: int, mlm_probability: float = 0.15,
                 special_token_ids: Sequence[int] = (), generator: torch.Generator | None = None,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                 device: torch.device | str | None = None) -> None:
        _check_int("vocab_size", vocab_size, 2)
        for name, value in (("mask_token_id", mask_token_id), ("pad_token_id", pad_token_id)):
            _check_int(name, value, 0)
            if value >= vocab_size:
                raise ValueError(f"{name} must be < vocab_size={vocab_size}, got {value}")
        _check_fraction("mlm_probability", mlm_probability, high_open=False)
        _check_fraction("mask_replace_prob", mask_replace_prob, low_open=False, high_open=False)
        _check_fraction("random_replace_prob", random_replace_prob, low_open=False, high_open=False)
        if mask_replace_prob + random_replace_prob > 1:
            raise ValueError("mask_replace_prob + random_replace_prob must be <= 1, got "
                             f"{mask_replace_prob} + {random_replace_prob}")
        self.vocab_size, self.mask_token_id, self.pad_token_id = vocab_size, mask_token_id, pad_token_id
        self.mlm_probability = mlm_probability
        self.special_token_ids = sorted({int(i) for i in special_token_ids} | {pad_token_id})
        self.generator, self.device = generator, device
        self.mask_replace_prob, self.random_replace_prob = mask_replace_prob, random_replace_prob

    def mask_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Corrupt a ``(B, T)`` batch; returns ``(input_ids, labels)``, both ``(B, T)``; the input is not modified."""
        g = self.generator
        labels = input_ids.clone()
        eligible = ~torch.isin(input_ids, torch.tensor(self.special_token_ids, device=input_ids.device))
        if attention_mask is not None:
            eligible &= attention_mask.bool()
        shape = input_ids.shape

        def coin(p: float) -> torch.Tensor:  # (B, T) booleans, True with probability p
            return (torch.rand(shape, generator=g) < p).to(input_ids.device)

        chosen = coin(self.mlm_probability) & eligible
        to_mask = chosen & coin(self.mask_replace_prob)
        rest = 1 - self.mask_replace_prob
        to_random = chosen & ~to_mask & coin(self.random_replace_prob / rest if rest > 0 else 0.0)
        random_ids = torch.randint(self.vocab_size, shape, generator=g).to(input_ids.device)
        corrupted = input_ids.clone()
        corrupted[to_mask] = self.mask_token_id
        corrupted[to_random] = random_ids[to_random]
        labels[~chosen] = IGNORE_INDEX
        return corrupted, labels

    def __call__(self, examples: Any) -> dict[str, torch.Tensor]:
        ids = [i for i, _ in _examples("examples", examples)]
        input_ids = _pad(ids, self.pad_token_id)  # (B, T)
        attention_mask = _pad([torch.ones_like(i) for i in ids], 0)  # (B, T)
        corrupted, labels = self.mask_tokens(input_ids, attention_mask)
        batch = {"input_ids": corrupted, "labels": labels, "attention_mask": attention_mask}
        return {k: v.to(self.device) if self.device is not None else v for k, v in batch.items()}


def _random_segmentation(num_items: int, num_segments: int, generator: torch.Generator | None) -> list[int]:
    """Split ``num_items`` into ``num_segments`` positive lengths, uniformly at random: (5, 2) -> e.g. [2, 3]."""
    cuts = torch.randperm(num_items - 1, generator=generator)[:num_segments - 1].sort().values.tolist()
    bounds = [0] + [c + 1 for c in cuts] + [num_items]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0,
                            generator: torch.Generator | None = None,
                            device: torch.device | str | None = None) -> torch.Tensor:
    """T5's noise mask, shape ``(length,)`` bool, True = noise (dropped from the input).

    As in T5: ``num_noise = round(length * noise_density)`` clipped to
    ``[1, length - 1]``; ``num_spans = max(1, round(num_noise / mean_span_length))``;
    noise and non-noise tokens are each split into ``num_spans`` random positive
    lengths and interleaved starting with non-noise, so the mask starts with
    kept tokens and ends with noise. Example: length 10 has ``round(1.5) = 2``
    noise tokens in ``max(1, round(2 / 3)) = 1`` span, so always
    ``[F, F, F, F, F, F, F, F, T, T]``.
    """
    _check_int("length", length, 1)
    _check_fraction("noise_density", noise_density)
    if mean_span_length < 1:
        raise ValueError(f"mean_span_length must be >= 1, got {mean_span_length}")
    n = max(length, 2)  # as T5: avoid degenerate lengths, cut back at the end
    num_noise = min(max(round(n * noise_density), 1), n - 1)
    num_spans = max(1, round(num_noise / mean_span_length))
    num_spans = min(num_spans, num_noise, n - num_noise)
    noise = _random_segmentation(num_noise, num_spans, generator)
    keep = _random_segmentation(n - num_noise, num_spans, generator)
    mask = []
    for k, z in zip(keep, noise):
        mask += [False] * k + [True] * z
    return torch.tensor(mask[:length], dtype=torch.bool, device=device)


def span_corrupt(tokens: Sequence[int] | torch.Tensor, noise_mask: Sequence[bool] | torch.Tensor,
                 sentinel_ids: Sequence[int], eos_token_id: int | None = None) -> tuple[list[int], list[int]]:
    """Apply a given noise mask: each noise span becomes one sentinel in the input; the target lists them.

    inputs: kept tokens, with noise span ``i`` replaced by ``sentinel_ids[i]``;
    targets: ``sentinel_ids[i]`` followed by span ``i``'s tokens, for each span;
    if the sequence ends with kept tokens, one more sentinel closes the target
    (the ``<Z>`` of the T5 paper's Figure 2). ``eos_token_id`` is appended to both.
    Example: tokens ``[1, 2, 3, 4, 5]``, mask ``[F, T, T, F, F]``, sentinels ``[99, 98]``
    -> inputs ``[1, 99, 4, 5]``, targets ``[99, 2, 3, 98]``.
    """
    toks = [int(t) for t in tokens]
    mask = [bool(m) for m in noise_mask]
    if len(toks) != len(mask):
        raise ValueError(f"noise_mask must have the length of tokens ({len(toks)}), got {len(mask)}")
    n_spans = sum(1 for i, m in enumerate(mask) if m and (i == 0 or not mask[i - 1]))
    needed = n_spans + (1 if toks and not mask[-1] else 0)
    if needed > len(sentinel_ids):
        raise ValueError(f"sentinel_ids must hold at least {needed} ids for this mask, got {len(sentinel_ids)}")
    inputs, targets, span = [], [], -1
    for i, (t, m) in enumerate(zip(toks, mask)):
        if m:
            if i == 0 or not mask[i - 1]:  # a new noise span
                span += 1
                inputs.append(sentinel_ids[span])
                targets.append(sentinel_ids[span])
            targets.append(t)
        else:
            inputs.append(t)
    if toks and not mask[-1]:
        targets.append(sentinel_ids[span + 1])
    if eos_token_id is not None:
        inputs.append(eos_token_id)
        targets.append(eos_token_id)
    return inputs, targets


class SpanCorruptionCollator:
    """T5 span corruption for a batch of token sequences (without EOS).

    Sentinels: either ``sentinel_ids`` (``<extra_id_0>``, ``<extra_id_1>``, ...
    in that order), or ``first_sentinel_id`` counting down as in T5, where
    ``<extra_id_i> = first_sentinel_id - i`` (T5: vocabulary 32100, ``<extra_id_0>``
    = 32099) with ``num_sentinels`` of them. Each sequence gets a fresh
    :func:`random_spans_noise_mask` and :func:`span_corrupt` (EOS appended to both).
    Output: ``input_ids`` ``(B, T_in)`` padded with ``pad_token_id``,
    ``attention_mask`` ``(B, T_in)``, ``labels`` ``(B, T_out)`` padded with ``-100``.
    """

    def __init__(self, first_sentinel_id: int | None = None, sentinel_ids: Sequence[int] | None = None,
                 num_sentinels: int = 100, noise_density: float = 0.15, mean_span_length: float = 3.0,
                 eos_token_id: int | None = 1, pad_token_id: int = 0, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> None:
        if (first_sentinel_id is None) == (sentinel_ids is None):
            raise ValueError("give exactly one of first_sentinel_id and sentinel_ids, got "
                             f"first_sentinel_id={first_sentinel_id}, sentinel_ids={sentinel_ids}")
        if sentinel_ids is None:
            _check_int("num_sentinels", num_sentinels, 1)
            _check_int("first_sentinel_id", first_sentinel_id, num_sentinels - 1)
            sentinel_ids = [first_sentinel_id - i for i in range(num_sentinels)]
        if len(sentinel_ids) == 0 or len(set(sentinel_ids)) != len(sentinel_ids):
            raise ValueError(f"sentinel_ids must be non-empty and distinct, got {list(sentinel_ids)}")
        _check_fraction("noise_density", noise_density)
        if mean_span_length < 1:
            raise ValueError(f"mean_span_length must be >= 1, got {mean_span_length}")
        _check_int("pad_token_id", pad_token_id, 0)
        self.sentinel_ids = [int(s) for s in sentinel_ids]
        self.noise_density, self.mean_span_length = noise_density, mean_span_length
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id
        self.generator, self.device = generator, device

    def __call__(self, examples: Any) -> dict[str, torch.Tensor]:
        inputs, targets = [], []
        for ids, _ in _examples("examples", examples):
            mask = random_spans_noise_mask(len(ids), self.noise_density, self.mean_span_length, self.generator)
            x, y = span_corrupt(ids, mask, self.sentinel_ids, self.eos_token_id)
            inputs.append(torch.tensor(x, dtype=torch.long))
            targets.append(torch.tensor(y, dtype=torch.long))
        batch = {"input_ids": _pad(inputs, self.pad_token_id),
                 "attention_mask": _pad([torch.ones_like(x) for x in inputs], 0),
                 "labels": _pad(targets, IGNORE_INDEX)}
        return {k: v.to(self.device) if self.device is not None else v for k, v in batch.items()}


# ---------------------------------------------------------------------------
# 5. The Hugging Face Hub, optional
# ---------------------------------------------------------------------------

_OFFLINE_ADVICE = ("Work offline with the corpora of course_utils.data (load_prose, facts_corpus, "
                   "associative_recall, ...), or with local files: datasets.load_dataset('text', "
                   "data_files='my.txt') needs no network.")


def _hub_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 2.0) -> bool:
    """True if a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_hub_dataset(path: str, *args: Any, connect_timeout: float = 2.0, **kwargs: Any) -> Any:
    """``datasets.load_dataset(path, *args, **kwargs)``, but fail at once when offline.

    Raises ``ConnectionError`` without waiting when ``HF_HUB_OFFLINE`` or
    ``HF_DATASETS_OFFLINE`` is set, or when the Hub host (``HF_ENDPOINT``,
    default ``huggingface.co``) does not accept a connection within ``connect_timeout`` seconds.
    Local files need no Hub: call ``datasets.load_dataset("text", data_files=...)`` directly.
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise ConnectionError(f"cannot load {path!r} from the Hugging Face Hub: {var} is set. "
                                  + _OFFLINE_ADVICE)
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    match = re.match(r"^(?:(https?)://)?([^/:]+)(?::(\d+))?", endpoint)
    host = match.group(2) if match else "huggingface.co"
    port = int(match.group(3)) if match and match.group(3) else (80 if match and match.group(1) == "http" else 443)
    if not _hub_reachable(host, port, connect_timeout):
        raise ConnectionError(f"cannot load {path!r}: the Hugging Face Hub ({host}:{port}) is not reachable "
                              f"within {connect_timeout} s. " + _OFFLINE_ADVICE)
    from datasets import load_dataset

    return load_dataset(path, *args, **kwargs)
