"""Pre-training data curation: line cleanup, quality rules, deduplication.

Small, readable re-implementations of the filters that web-scale pipelines
chain before pre-training, plus a seeded generator of a *dirty* corpus to run
them on. Every filter is a plain function of one text (or of a list of
documents), so it can be tested, reordered and measured on its own.

References followed:

* **Line filter** (:func:`clean_lines`): C4's rules, Raffel et al. 2020,
  "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
  Transformer", section 2.2: keep lines that end in terminal punctuation and
  have enough words; drop lines mentioning JavaScript, cookies or policy
  boilerplate (CCNet, Wenzek et al. 2020, likewise works line by line).
  One change: ``:`` and ``)`` also count as line ends, because much of the
  course's prose (Python's documentation) ends that way.
* **Quality rules** (:func:`gopher_quality`, :func:`english_like`): the
  MassiveWeb rules of Gopher, Rae et al. 2021, "Scaling Language Models",
  appendix A.1.1: 50 to 100,000 words, mean word length 3 to 10 characters,
  symbol-to-word ratio at most 0.1, at least 80 % of words with a letter, at
  most 30 % duplicated lines, and at least two of eight English stop words.
* **Exact deduplication** (:func:`exact_dedup`): a hash of the normalized
  text; the first copy is kept (Lee et al. 2022, "Deduplicating Training
  Data Makes Language Models Better").
* **Near deduplication** (:func:`shingles`, :func:`jaccard`,
  :func:`near_dedup`): Broder 1997, "On the resemblance and containment of
  documents": a document is its set of word n-grams ("shingles") and two
  documents resemble each other when the Jaccard similarity of their sets is
  high. Pipelines estimate that similarity with MinHash at web scale (Lee et
  al. 2022; Penedo et al. 2024, FineWeb); here it is computed exactly, with an
  inverted index so that only documents sharing a shingle are compared.

Documents are dicts with a ``"text"`` key (other keys ride along, e.g. the
``"kind"`` and ``"family"`` labels of :func:`make_raw_corpus`); the functions
that read one text also accept a plain ``str``.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Union

from .checks import check_int, check_number

__all__ = [
    # a dirty corpus
    "as_documents",
    "make_raw_corpus",
    "garbled",
    "not_english",
    "near_copy",
    "BOILERPLATE",
    "SPAM",
    # filters
    "clean_lines",
    "gopher_quality",
    "english_like",
    # deduplication
    "normalize",
    "exact_dedup",
    "shingles",
    "jaccard",
    "near_dedup",
    # measuring
    "with_text",
    "count_tokens",
]

Document = Union[Mapping[str, Any], str]

# ----------------------------------------------------------------------------- a dirty corpus

BOILERPLATE = ["Click here to subscribe to our newsletter!", "Copyright 2024 Example Corp. All rights reserved.",
               "Home | About | Blog | Contact", "This website uses cookies to improve your experience.",
               "Share on Facebook Share on Twitter Share by email", "Page 3 of 17 Next >",
               "Please enable JavaScript to view the comments.", "Sign in Register Forgot your password?"]
SHORT = ["ok", "Read more", "Loading...", "Next page", "thanks!!", "Top of page", "Reply", "404 Not Found"]
SPAM = ["Buy cheap watches online now, best prices guaranteed for all our customers.",
        "Limited offer: order today and get free shipping on every item in the store."]
SYLLABLES = ["ka", "lo", "mi", "ter", "vos", "an", "qui", "dre", "zu", "pel", "nor", "sa", "ti", "bru", "e", "o"]
_FILLERS = ["the", "a", "this", "that", "any"]  # what near_copy writes over a word


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _check_rng(rng: Any) -> random.Random:
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
    return rng


def _check_docs(docs: Any) -> None:
    if isinstance(docs, (str, Mapping)):
        raise TypeError(f"docs must be a list of documents, got one {type(docs).__name__}")


def _text_of(doc: Document, name: str = "doc") -> str:
    """The text of a document: the str itself, or ``doc["text"]``."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping) and isinstance(doc.get("text"), str):
        return doc["text"]
    raise TypeError(f"{name} must be a str or a dict with a str 'text', got {type(doc).__name__}")


def as_documents(sources: Sequence[str], paragraphs: Sequence[str], min_words: int = 80) -> list[str]:
    """Group consecutive paragraphs of the same source into documents of at least ``min_words`` words.

    Paragraphs are joined with ``"\\n"``; a short remainder at the end of a source
    joins the document before it. ``sources[i]`` names the source of ``paragraphs[i]``.
    Example: ``as_documents(["a", "a", "b"], ["x y", "z", "w"], min_words=2)`` -> ``["x y\\nz", "w"]``
    ("z" would be a document of one word, so it joins "x y"; "w" has another source).
    """
    if isinstance(sources, str) or isinstance(paragraphs, str):
        raise TypeError("sources and paragraphs must be sequences of str, not one str")
    if len(sources) != len(paragraphs):
        raise ValueError(f"sources and paragraphs must have the same length, got {len(sources)} and {len(paragraphs)}")
    check_int("min_words", min_words, 1)
    grouped: list[list[str]] = []  # [source, text] pairs
    for source, para in zip(sources, paragraphs):
        if grouped and grouped[-1][0] == source and len(grouped[-1][1].split()) < min_words:
            grouped[-1][1] += "\n" + para
        else:
            grouped.append([source, para])
    docs: list[str] = []
    for i, (source, text) in enumerate(grouped):
        if docs and grouped[i - 1][0] == source and len(text.split()) < min_words:
            docs[-1] += "\n" + text
        else:
            docs.append(text)
    return docs


def garbled(rng: random.Random) -> str:
    """50 to 120 "words" of 2 to 12 random letters, digits and symbols: machine-made gibberish."""
    _check_rng(rng)
    chars = string.ascii_letters + string.digits + "#$%&*@;:/|{}[]<>~^_=+"
    return " ".join("".join(rng.choices(chars, k=rng.randint(2, 12))) for _ in range(rng.randint(50, 120)))


def not_english(rng: random.Random) -> str:
    """5 to 10 sentences of pronounceable pseudo-words: looks like a language, is not English."""
    _check_rng(rng)
    sentences = [" ".join("".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(rng.randint(6, 14)))
                 for _ in range(rng.randint(5, 10))]
    return " ".join(s.capitalize() + "." for s in sentences)


def near_copy(doc: str, rng: random.Random, n_changes: int = 1) -> str:
    """``doc`` with ``n_changes`` random words (split on single spaces) overwritten by a filler word
    ("the", "a", "this", "that", "any"): a lightly edited copy."""
    _check_str("doc", doc)
    _check_rng(rng)
    check_int("n_changes", n_changes, 0)
    words = doc.split(" ")
    for _ in range(n_changes):
        words[rng.randrange(len(words))] = rng.choice(_FILLERS)
    return " ".join(words)


def make_raw_corpus(clean_docs: Sequence[str], seed: int = 0) -> list[dict[str, Any]]:
    """Clean documents plus seeded junk, shuffled: a list of ``{"text", "kind", "family"}``.

    For each clean document (its index is its ``family``): with probability 0.2 a
    boilerplate line is inserted (kind ``"clean + boilerplate line"``, else
    ``"clean"``); 0, 1, 2, 3 or 5 ``"exact duplicate"`` copies follow (0 with
    probability 8/12); with probability 0.05 a ``"near duplicate"`` (one word
    changed). Then, for ``n`` clean documents, ``n // 10`` ``"boilerplate"``
    documents and ``n // 20`` each of ``"too short"``, ``"garbled"``,
    ``"repeated lines"`` and ``"not English"`` (family ``None``). After the
    shuffle, the first copy of a family that has no clean document before it
    is relabelled ``"clean"``, so every family's first appearance is its original.
    """
    if isinstance(clean_docs, str) or not all(isinstance(d, str) and d for d in clean_docs):
        raise TypeError("clean_docs must be a sequence of non-empty str")
    check_int("seed", seed, 0)
    rng = random.Random(seed)
    raw: list[dict[str, Any]] = []
    for family, doc in enumerate(clean_docs):
        if rng.random() < 0.2:  # a boilerplate line slipped into the page
            lines = doc.split("\n")
            lines.insert(rng.randint(0, len(lines)), rng.choice(BOILERPLATE))
            raw.append({"text": "\n".join(lines), "kind": "clean + boilerplate line", "family": family})
        else:
            raw.append({"text": doc, "kind": "clean", "family": family})
        for _ in range(rng.choice([0] * 8 + [1, 2, 3, 5])):  # the same page crawled again
            raw.append({"text": doc, "kind": "exact duplicate", "family": family})
        if rng.random() < 0.05:  # a lightly edited copy
            raw.append({"text": near_copy(doc, rng), "kind": "near duplicate", "family": family})
    n = len(clean_docs)
    junk: list[tuple[str, Callable[[], str]]] = (
        [("boilerplate", lambda: rng.choice(BOILERPLATE))] * (n // 10)
        + [("too short", lambda: rng.choice(SHORT))] * (n // 20)
        + [("garbled", lambda: garbled(rng))] * (n // 20)
        + [("repeated lines", lambda: "\n".join([rng.choice(SPAM)] * rng.randint(4, 12)))] * (n // 20)
        + [("not English", lambda: not_english(rng))] * (n // 20))
    raw += [{"text": make(), "kind": kind, "family": None} for kind, make in junk]
    rng.shuffle(raw)
    first: set[int] = set()  # after shuffling, the first copy of a family counts as the original
    for doc in raw:
        if doc["kind"] == "exact duplicate" and doc["family"] not in first:
            doc["kind"] = "clean"
        if doc["kind"] in ("clean", "clean + boilerplate line"):
            first.add(doc["family"])
    return raw


# ----------------------------------------------------------------------------- filters

TERMINAL = (".", "!", "?", '"', ":", ")")  # C4's terminal punctuation, plus ":" and ")"
POLICY = ("javascript", "cookie", "privacy policy", "terms of use", "lorem ipsum")
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher's eight


def clean_lines(text: str, min_words: int = 5) -> str:
    """C4-style line filter: keep the lines that end like a sentence (:data:`TERMINAL`), have at
    least ``min_words`` words and mention no policy boilerplate (:data:`POLICY`, any case).

    Example: ``clean_lines("Home | About\\nThe cat sat on the mat.")`` -> ``"The cat sat on the mat."``.
    """
    _check_str("text", text)
    check_int("min_words", min_words, 0)
    return "\n".join(line for line in text.split("\n")
                     if line.rstrip().endswith(TERMINAL) and len(line.split()) >= min_words
                     and not any(p in line.lower() for p in POLICY))


def gopher_quality(text: str) -> str | None:
    """Gopher's quality and repetition rules: ``None`` if ``text`` passes, else the first rule it fails.

    The rules, in order (words are split on whitespace; lines are the non-blank lines):
    ``"word count"`` (50 to 100,000 words), ``"mean word length"`` (3 to 10 characters),
    ``"symbol ratio"`` (``#`` and ``...`` at most 0.1 per word), ``"words with a letter"``
    (at least 80 %), ``"repeated lines"`` (at most 30 % of the lines are repeats).
    Example: ``gopher_quality("too short")`` -> ``"word count"``.
    """
    _check_str("text", text)
    words = text.split()
    if not 50 <= len(words) <= 100_000:
        return "word count"
    if not 3 <= sum(len(w) for w in words) / len(words) <= 10:
        return "mean word length"
    if (text.count("#") + text.count("...")) / len(words) > 0.1:
        return "symbol ratio"
    if sum(any(c.isalpha() for c in w) for w in words) / len(words) < 0.8:
        return "words with a letter"
    lines = [line for line in text.split("\n") if line.strip()]
    if (len(lines) - len(set(lines))) / len(lines) > 0.3:  # share of lines that repeat an earlier one
        return "repeated lines"
    return None


def english_like(text: str, min_stop_words: int = 2) -> bool:
    """Gopher's stop-word check: at least ``min_stop_words`` of the eight :data:`STOP_WORDS` occur
    (case-insensitive, surrounding punctuation stripped).

    Example: ``english_like("The end of it.")`` -> ``True`` ("the", "of").
    """
    _check_str("text", text)
    check_int("min_stop_words", min_stop_words, 0)
    return len(STOP_WORDS & {w.strip('.,;:!?()"').lower() for w in text.split()}) >= min_stop_words


# ----------------------------------------------------------------------------- deduplication

def normalize(text: str) -> str:
    """Lower-case, with every run of whitespace made one space: ``normalize(" A\\n b ")`` -> ``"a b"``."""
    return " ".join(_check_str("text", text).lower().split())


def exact_dedup(docs: Iterable[Document]) -> list[Document]:
    """Keep the first document of each normalized text (compared by SHA-1 of :func:`normalize`).

    Returns the kept documents themselves, in their order.
    Example: ``exact_dedup(["A b", "a  B", "c"])`` -> ``["A b", "c"]``.
    """
    _check_docs(docs)
    seen: set[str] = set()
    kept: list[Document] = []
    for i, doc in enumerate(docs):
        digest = hashlib.sha1(normalize(_text_of(doc, f"docs[{i}]")).encode("utf-8")).hexdigest()
        if digest not in seen:
            seen.add(digest)
            kept.append(doc)
    return kept


def shingles(text: str, n: int = 5) -> set[str]:
    """The set of word n-grams of the normalized text; a text of fewer than ``n`` words is one shingle.

    Example: ``shingles("a b c d", 2)`` -> ``{"a b", "b c", "c d"}``.
    """
    check_int("n", n, 1)
    words = normalize(text).split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: AbstractSet, b: AbstractSet) -> float:
    """Jaccard similarity ``|a & b| / |a | b|``; two empty sets are identical (1.0).

    Example: ``jaccard({1, 2, 3}, {2, 3, 4})`` -> ``0.5``.
    """
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, AbstractSet):
            raise TypeError(f"{name} must be a set, got {type(s).__name__}")
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def near_dedup(docs: Iterable[Document], n: int = 5, threshold: float = 0.8) -> list[Document]:
    """Drop a document whose n-gram set (:func:`shingles`) has Jaccard similarity >= ``threshold``
    with an earlier *kept* one; return the kept documents in their order.

    An inverted index (shingle -> kept documents) limits the comparisons to
    documents that share at least one shingle.
    """
    check_int("n", n, 1)
    check_number("threshold", threshold, 0, 1, low_open=True)
    _check_docs(docs)
    index: dict[str, list[int]] = {}
    kept_sets: list[set[str]] = []
    kept: list[Document] = []
    for i, doc in enumerate(docs):
        s = shingles(_text_of(doc, f"docs[{i}]"), n)
        candidates = {j for g in s for j in index.get(g, ())}
        if any(jaccard(s, kept_sets[j]) >= threshold for j in candidates):
            continue
        for g in s:
            index.setdefault(g, []).append(len(kept_sets))
        kept_sets.append(s)
        kept.append(doc)
    return kept


# ----------------------------------------------------------------------------- measuring

def with_text(doc: Mapping[str, Any], text: str) -> dict[str, Any]:
    """A copy of the document with a new text (the other keys are kept).

    Example: ``with_text({"text": "a", "kind": "k"}, "b")`` -> ``{"text": "b", "kind": "k"}``.
    """
    if not isinstance(doc, Mapping):
        raise TypeError(f"doc must be a dict, got {type(doc).__name__}")
    return {**doc, "text": _check_str("text", text)}


def count_tokens(docs: Iterable[Document], tokenizer: Any, cache: dict[str, int] | None = None) -> int:
    """Total number of tokens in the documents' texts.

    ``tokenizer`` is anything with an ``encode(text) -> list`` method (the tokenizers of
    :mod:`course_utils.tokenization`, a Hugging Face tokenizer) or a function ``text -> list``.
    ``cache`` (a dict, filled in place) remembers the count of each text, so the
    stages of a pipeline, which share most texts, are tokenized once.
    Example: ``count_tokens(["a b", "c"], str.split)`` -> ``3``.
    """
    _check_docs(docs)
    encode = getattr(tokenizer, "encode", tokenizer)
    if not callable(encode):
        raise TypeError(f"tokenizer must have an encode method or be callable, got {type(tokenizer).__name__}")
    if cache is None:
        cache = {}
    elif not isinstance(cache, dict):
        raise TypeError(f"cache must be None or a dict, got {type(cache).__name__}")
    total = 0
    for i, doc in enumerate(docs):
        text = _text_of(doc, f"docs[{i}]")
        if text not in cache:
            cache[text] = len(encode(text))
        total += cache[text]
    return total
