"""Tokenizers: text to integer ids and back.

Three tokenizers of increasing sophistication share one small interface
(:class:`Tokenizer`): ``encode(str) -> list[int]``, ``decode(list[int]) -> str``,
``vocab_size``, ``special_tokens`` and ``save``/``load`` as JSON.

* :class:`CharTokenizer`: one id per character seen in a text.
* :class:`WordTokenizer`: one id per word or punctuation mark, capped vocabulary.
* :class:`BPETokenizer`: byte-level byte-pair encoding (BPE), the scheme of
  GPT-2 and most current LLMs, written from scratch.

References followed:

* Gage (1994), "A New Algorithm for Data Compression": byte-pair encoding.
* Sennrich, Haddow and Birch (2016), "Neural Machine Translation of Rare Words
  with Subword Units": BPE for vocabularies.
* Radford et al. (2019), GPT-2: BPE over UTF-8 *bytes* (so nothing is ever
  unknown) after a regex pre-tokenization that keeps words, numbers and
  punctuation apart.
* Karpathy's ``minbpe``: the shape of this module (helpers with worked examples,
  a base class and short subclasses, tests as the specification).

Training BPE the textbook way recounts every pair after every merge. Here the
pairs are counted once, over the *unique* pre-tokenized chunks weighted by how
often each occurs, and each merge updates only the chunks that contain the
merged pair (see :meth:`BPETokenizer.train`). The result is exactly the same
list of merges, orders of magnitude sooner.

Tie-breaking rule (used by training, documented so that it can be reproduced):
at each step the pair with the highest count is merged; among pairs with equal
counts the *smallest* pair wins, comparing ``(left_id, right_id)`` as tuples.

:func:`train_hf_bpe` trains the same kind of tokenizer with Hugging Face
``tokenizers`` and :func:`compare_tokenizers` puts tokenizers side by side.

Why one file of this size: the three tokenizers share the :class:`Tokenizer`
base and its save/load format, and BPE's training and encoding (about half the
file) must be read together to be understood.
"""

from __future__ import annotations

import heapq
import json
import operator
import os
import re
import warnings
from collections import Counter
from pathlib import Path
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from .checks import check_int

try:  # the `regex` module knows Unicode classes such as \p{L}; it ships with transformers
    import regex as _re_unicode
except ImportError:  # pragma: no cover - exercised only without `regex`
    _re_unicode = None

__all__ = [
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "BPETokenizer",
    "GPT2_SPLIT_PATTERN",
    "STDLIB_SPLIT_PATTERN",
    "get_pair_counts",
    "merge",
    "train_hf_bpe",
    "to_hf_tokenizer",
    "save_hf",
    "compare_tokenizers",
]

# GPT-2's pre-tokenization: contractions, letters, numbers, other symbols, whitespace.
# A leading space stays attached to the word that follows (" the").
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
# The same idea with the standard library's `re`, which lacks \p{..}:
# letters are [^\W\d_], numbers \d, and everything else (underscore included) is a symbol.
STDLIB_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
)


# --------------------------------------------------------------------------- helpers


def get_pair_counts(
    ids: Sequence[int], counts: dict[tuple[int, int], int] | None = None
) -> dict[tuple[int, int], int]:
    """Count each pair of neighbouring ids (adding to ``counts`` if given).

    Example: ``[1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}``.
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right.

    Example: ``merge([1, 2, 3, 1, 2], (1, 2), 4) -> [4, 3, 4]``; overlapping
    occurrences go to the leftmost: ``merge([5, 5, 5], (5, 5), 6) -> [6, 5]``.
    """
    out: list[int] = []
    i = 0
    n = len(ids)
    a, b = pair
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _check_text(text: Any, name: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    return text


def _check_ids(ids: Any, vocab_size: int) -> list[int]:
    """Accept a flat sequence of ints (or a 1-D tensor/array) with values in [0, vocab_size)."""
    if hasattr(ids, "tolist"):  # torch.Tensor or numpy array
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}")
    out = []
    for element in ids:
        if isinstance(element, bool) or not hasattr(element, "__index__"):
            raise TypeError(
                f"ids must contain ints, got an element of type {type(element).__name__}"
            )
        i = operator.index(element)  # also accepts numpy integers
        if not 0 <= i < vocab_size:
            raise ValueError(f"ids must be in [0, {vocab_size}) (vocab_size), got {i}")
        out.append(i)
    return out


# --------------------------------------------------------------------------- base class


class Tokenizer:
    """What every tokenizer offers: ``encode``, ``decode``, ``vocab_size``, save/load.

    ``special_tokens`` maps each special token's text (e.g. ``"<unk>"``) to its id.
    """

    def __init__(self) -> None:
        self.special_tokens: dict[str, int] = {}

    @property
    def vocab_size(self) -> int:
        """Number of distinct ids; every id is in ``range(vocab_size)``."""
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Text to a list of ids."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        """A list of ids (or a 1-D tensor) back to text."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"

    # -- persistence: each subclass says what defines it, the base class writes JSON

    def _to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_dict(cls, state: dict[str, Any]) -> Tokenizer:
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer to ``path`` as JSON."""
        state = {"type": type(self).__name__, **self._to_dict()}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(state, f, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a tokenizer written by :meth:`save`; ``Tokenizer.load`` accepts any kind."""
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        kinds = {k.__name__: k for k in (CharTokenizer, WordTokenizer, BPETokenizer)}
        kind = kinds.get(state.pop("type", None))
        if kind is None or not issubclass(kind, cls):
            raise ValueError(
                f"{os.fspath(path)!r} does not hold a {cls.__name__} "
                f"(expected type in {sorted(k for k, v in kinds.items() if issubclass(v, cls))})"
            )
        return kind._from_dict(state)


# --------------------------------------------------------------------------- characters


class CharTokenizer(Tokenizer):
    """One id per character seen when built; anything else becomes ``<unk>`` (id 0).

    Round-trip (``decode(encode(s)) == s``) holds only for strings made of seen
    characters: an unseen character decodes as the text of ``unk_token``.

    >>> tok = CharTokenizer("hello")  # vocabulary: <unk> e h l o
    >>> tok.encode("hole!")
    [2, 4, 3, 1, 0]
    """

    def __init__(self, text_or_chars: str | Iterable[str] = "", unk_token: str = "<unk>") -> None:
        super().__init__()
        if isinstance(text_or_chars, str):
            chars = set(text_or_chars)
        elif isinstance(text_or_chars, Iterable):
            chars = set()
            for c in text_or_chars:
                if not isinstance(c, str) or len(c) != 1:
                    raise ValueError(f"text_or_chars must hold single characters, got {c!r}")
                chars.add(c)
        else:
            raise TypeError(
                f"text_or_chars must be a str or an iterable of characters, "
                f"got {type(text_or_chars).__name__}"
            )
        _check_text(unk_token, "unk_token")
        self.unk_token = unk_token
        self.itos: list[str] = [unk_token] + sorted(chars)  # id -> character
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos) if i > 0}
        self.special_tokens = {unk_token: 0}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        _check_text(text)
        return [self.stoi.get(c, 0) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in _check_ids(ids, self.vocab_size))

    def _to_dict(self) -> dict[str, Any]:
        return {"unk_token": self.unk_token, "chars": self.itos[1:]}

    @classmethod
    def _from_dict(cls, state: dict[str, Any]) -> CharTokenizer:
        return cls(state["chars"], unk_token=state["unk_token"])


# --------------------------------------------------------------------------- words

# A word (letters, digits, underscore; inner apostrophes kept: "don't") or one symbol.
WORD_PATTERN = r"\w+(?:'\w+)*|[^\w\s]"
_NO_SPACE_BEFORE = frozenset(".,;:!?%)]}")
_NO_SPACE_AFTER = frozenset("([{")


class WordTokenizer(Tokenizer):
    """One id per word or punctuation mark; the ``max_vocab_size - 1`` most frequent are kept.

    Lossy by design: whitespace is dropped and rebuilt by :meth:`decode` (one
    space between tokens, none before ``.,;:!?%)]}`` or after ``([{``), and words
    outside the vocabulary come back as ``unk_token``. Ties in frequency are
    broken alphabetically, so the vocabulary is deterministic.

    >>> tok = WordTokenizer("the cat sat.")
    >>> tok.decode(tok.encode("the  dog sat ."))
    'the <unk> sat.'
    """

    def __init__(
        self,
        text: str = "",
        max_vocab_size: int = 10_000,
        lowercase: bool = False,
        unk_token: str = "<unk>",
    ) -> None:
        super().__init__()
        _check_text(text)
        check_int("max_vocab_size", max_vocab_size, 1)
        _check_text(unk_token, "unk_token")
        self.max_vocab_size = max_vocab_size
        self.lowercase = lowercase
        self.unk_token = unk_token
        counts = Counter(w for w in self.split(text) if w != unk_token)
        ranked = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[: max_vocab_size - 1]
        self.itos: list[str] = [unk_token] + [w for w, _ in ranked]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        self.special_tokens = {unk_token: 0}

    def split(self, text: str) -> list[str]:
        """Text to word and punctuation strings: ``"Hi, you!" -> ['Hi', ',', 'you', '!']``."""
        _check_text(text)
        return re.findall(WORD_PATTERN, text.lower() if self.lowercase else text)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, 0) for w in self.split(text)]

    def decode(self, ids: Sequence[int]) -> str:
        out: list[str] = []
        for i in _check_ids(ids, self.vocab_size):
            word = self.itos[i]
            if out and word not in _NO_SPACE_BEFORE and out[-1] not in _NO_SPACE_AFTER:
                out.append(" ")
            out.append(word)
        return "".join(out)

    def _to_dict(self) -> dict[str, Any]:
        return {
            "unk_token": self.unk_token,
            "lowercase": self.lowercase,
            "max_vocab_size": self.max_vocab_size,
            "words": self.itos[1:],
        }

    @classmethod
    def _from_dict(cls, state: dict[str, Any]) -> WordTokenizer:
        tok = cls("", max_vocab_size=state["max_vocab_size"], lowercase=state["lowercase"],
                  unk_token=state["unk_token"])
        tok.itos = [tok.unk_token] + list(state["words"])
        tok.stoi = {w: i for i, w in enumerate(tok.itos)}
        return tok


# --------------------------------------------------------------------------- byte-level BPE


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ids 0..255 are raw bytes, then one id per learned merge, then specials.

    Any string round-trips exactly (``decode(encode(s)) == s``): every string is
    UTF-8 bytes, and every byte has an id. An untrained tokenizer encodes a text
    as its UTF-8 bytes. Special tokens (e.g. ``"<|endoftext|>"``) get the ids
    after the merges, are encoded as one id each and are never produced by a merge.

    >>> tok = BPETokenizer().train("aaabdaaabac", vocab_size=259, progress=False)
    >>> tok.encode("aaabdaaabac")  # aa -> 256, ab -> 257, (aa)(ab) -> 258
    [258, 100, 258, 97, 99]
    """

    def __init__(self, pattern: str | None = None) -> None:
        super().__init__()
        if pattern is None:
            pattern = GPT2_SPLIT_PATTERN if _re_unicode is not None else STDLIB_SPLIT_PATTERN
        self.pattern = _check_text(pattern, "pattern")
        self._compiled = (_re_unicode or re).compile(pattern)
        self.merges: dict[tuple[int, int], int] = {}  # (left id, right id) -> new id, in order
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}  # id -> bytes
        self._cache: dict[str, list[int]] = {}  # pre-tokenized chunk -> ids

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges) + len(self.special_tokens)

    def pre_tokenize(self, text: str) -> list[str]:
        """Cut text into the chunks that merges never cross (joining them gives ``text`` back).

        Example: ``"Hello  world's 42!" -> ['Hello', ' ', ' world', "'s", ' 42', '!']``.
        """
        return self._compiled.findall(_check_text(text))

    @staticmethod
    def _check_special_tokens(special_tokens: Iterable[str] | None) -> list[str]:
        if isinstance(special_tokens, str):
            raise TypeError("special_tokens must be an iterable of str, got a single str")
        specials: list[str] = []
        for s in special_tokens or []:
            _check_text(s, "special_tokens element")
            if not s or s in specials:
                raise ValueError(f"special_tokens must be distinct non-empty strings, got {s!r}")
            specials.append(s)
        return specials

    def _set_special_tokens(self, special_tokens: Iterable[str]) -> None:
        self.special_tokens = {}
        for s in self._check_special_tokens(special_tokens):
            self.special_tokens[s] = 256 + len(self.merges) + len(self.special_tokens)
        for s, i in self.special_tokens.items():
            self.vocab[i] = s.encode("utf-8")

    def _split_special(self, text: str, specials: Collection[str]) -> list[str]:
        """Cut ``text`` around the given specials: ``"a<|e|>b" -> ['a', '<|e|>', 'b']``."""
        if not specials:
            return [text]
        # longest first, so that a special containing another one wins
        alternatives = "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True))
        return [part for part in re.split(f"({alternatives})", text) if part]

    # -- training

    def train(
        self,
        text: str,
        vocab_size: int,
        special_tokens: Iterable[str] | None = None,
        progress: bool = True,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``; returns self.

        Steps: (1) cut the text around special tokens (they are never learned
        from), pre-tokenize with the regex and count the unique chunks;
        (2) count the byte pairs once, each chunk weighted by its frequency, and
        remember which chunks hold each pair; (3) repeat: take the most frequent
        pair (ties: smallest pair) from a max-heap, give it a new id, and rewrite
        only the chunks that contain it, adjusting the counts of the pairs that
        appeared or disappeared. Stale heap entries are skipped when popped
        ("lazy deletion"). If the text runs out of pairs, training stops early
        with a warning and the vocabulary is smaller than asked.
        """
        from tqdm.auto import tqdm

        _check_text(text)
        specials = self._check_special_tokens(special_tokens)
        check_int("vocab_size", vocab_size, 256 + len(specials))
        num_merges = vocab_size - 256 - len(specials)

        # (1) unique chunks and their frequencies
        chunk_counts: Counter[str] = Counter()
        for part in self._split_special(text, specials):
            if part not in specials:
                chunk_counts.update(self.pre_tokenize(part))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # chunk -> ids
        freqs = list(chunk_counts.values())

        # (2) pair counts over all chunks, and where each pair occurs
        pair_counts: dict[tuple[int, int], int] = {}
        where: dict[tuple[int, int], set[int]] = {}
        for w, (ids, f) in enumerate(zip(words, freqs)):
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + f
                where.setdefault(pair, set()).add(w)
        heap = [(-c, pair) for pair, c in pair_counts.items()]  # max count, then smallest pair
        heapq.heapify(heap)

        # (3) merge, updating only the chunks that change
        merges: dict[tuple[int, int], int] = {}
        vocab = {i: bytes([i]) for i in range(256)}
        for new_id in tqdm(range(256, 256 + num_merges), desc="BPE merges", disable=not progress):
            while heap:
                neg_count, pair = heapq.heappop(heap)
                if pair_counts.get(pair) == -neg_count:  # up to date, not stale
                    break
            else:
                warnings.warn(
                    f"text ran out of pairs after {len(merges)} merges; "
                    f"vocab_size will be {256 + len(merges) + len(specials)}, not {vocab_size}",
                    stacklevel=2,
                )
                break
            merges[pair] = new_id
            vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
            delta: dict[tuple[int, int], int] = {}  # change of each pair's count
            for w in where.pop(pair):
                old = words[w]
                new = merge(old, pair, new_id)
                if len(new) == len(old):  # stale index entry: pair no longer here
                    continue
                f = freqs[w]
                for p in zip(old, old[1:]):
                    delta[p] = delta.get(p, 0) - f
                for p in zip(new, new[1:]):
                    delta[p] = delta.get(p, 0) + f
                    if new_id in p:  # the only pairs this chunk did not hold before
                        where.setdefault(p, set()).add(w)
                words[w] = new
            for p, d in delta.items():
                if d == 0:
                    continue
                c = pair_counts.get(p, 0) + d
                if c > 0:
                    pair_counts[p] = c
                    heapq.heappush(heap, (-c, p))
                else:
                    pair_counts.pop(p, None)

        self.merges = merges
        self.vocab = vocab
        self._cache = {}
        self._set_special_tokens(specials)
        return self

    # -- encoding and decoding

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Apply the merges to one pre-tokenized chunk, earliest-learned merge first."""
        ids = self._cache.get(chunk)
        if ids is not None:
            return ids
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                break  # nothing left to merge
            ids = merge(ids, pair, self.merges[pair])
        if len(self._cache) < 100_000:
            self._cache[chunk] = ids
        return ids

    def encode(
        self, text: str, allowed_special: str | Collection[str] = "none_raise"
    ) -> list[int]:
        """Text to ids.

        ``allowed_special`` says which special tokens in ``text`` become their id:
        ``"all"``, ``"none"`` (encode them as ordinary text), ``"none_raise"``
        (the default: like ``"none"`` but raise if one occurs, as ``tiktoken``
        does), or a collection of special token strings.
        """
        _check_text(text)
        if allowed_special == "all":
            allowed: Collection[str] = self.special_tokens
        elif allowed_special in ("none", "none_raise"):
            allowed = ()
            if allowed_special == "none_raise":
                found = [s for s in self.special_tokens if s in text]
                if found:
                    raise ValueError(
                        f"text contains special token(s) {found}; pass allowed_special='all' "
                        f"to encode them as special ids or 'none' to encode them as text"
                    )
        elif isinstance(allowed_special, Collection) and not isinstance(allowed_special, str):
            unknown = [s for s in allowed_special if s not in self.special_tokens]
            if unknown:
                raise ValueError(
                    f"allowed_special has tokens {unknown} that are not special tokens "
                    f"{sorted(self.special_tokens)}"
                )
            allowed = allowed_special
        else:
            raise ValueError(
                f"allowed_special must be 'all', 'none', 'none_raise' or a collection of "
                f"special tokens, got {allowed_special!r}"
            )
        ids: list[int] = []
        for part in self._split_special(text, allowed):
            if part in allowed:
                ids.append(self.special_tokens[part])
            else:
                for chunk in self.pre_tokenize(part):
                    ids.extend(self._encode_chunk(chunk))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text; bytes that do not form valid UTF-8 (a cut sequence) become U+FFFD."""
        data = b"".join(self.vocab[i] for i in _check_ids(ids, self.vocab_size))
        return data.decode("utf-8", errors="replace")

    # -- persistence

    def _to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "merges": [list(pair) for pair in self.merges],  # merge k creates id 256 + k
            "special_tokens": self.special_tokens,
        }

    @classmethod
    def _from_dict(cls, state: dict[str, Any]) -> BPETokenizer:
        tok = cls(state["pattern"])
        for new_id, (a, b) in enumerate(state["merges"], start=256):
            if not (0 <= a < new_id and 0 <= b < new_id):
                raise ValueError(f"merges: pair {(a, b)} uses an id not defined before {new_id}")
            tok.merges[(a, b)] = new_id
            tok.vocab[new_id] = tok.vocab[a] + tok.vocab[b]
        specials = sorted(state["special_tokens"].items(), key=lambda kv: kv[1])
        tok._set_special_tokens(s for s, _ in specials)
        if tok.special_tokens != state["special_tokens"]:
            raise ValueError(
                f"special_tokens ids must follow the merges, got {state['special_tokens']}"
            )
        return tok


# --------------------------------------------------------------------------- Hugging Face


def train_hf_bpe(
    text_or_iterator: str | Iterable[str],
    vocab_size: int,
    special_tokens: Iterable[str] | None = None,
    show_progress: bool = False,
) -> Any:
    """Train a GPT-2-style byte-level BPE with Hugging Face ``tokenizers``.

    Same recipe as :class:`BPETokenizer`: GPT-2 regex pre-tokenization, the 256
    bytes as the starting alphabet, merges up to ``vocab_size`` (which counts the
    bytes and the special tokens). Two differences: HF gives special tokens the
    *first* ids (0, 1, ...), and shows bytes as printable characters (a space
    is ``"Ġ"``). Returns a ``tokenizers.Tokenizer``: ``.encode(s).ids``, ``.decode(ids)``.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if isinstance(text_or_iterator, str):
        text_or_iterator = [text_or_iterator]
    elif not isinstance(text_or_iterator, Iterable):
        raise TypeError(
            f"text_or_iterator must be a str or an iterable of str, "
            f"got {type(text_or_iterator).__name__}"
        )
    specials = list(special_tokens or [])
    check_int("vocab_size", vocab_size, 256 + len(specials))
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2 regex + bytes
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes
        show_progress=show_progress,
    )
    tok.train_from_iterator(text_or_iterator, trainer=trainer)
    return tok


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (the alphabet of byte-level BPE
    in Hugging Face ``tokenizers``): printable bytes stand for themselves, the
    others are shifted to code points from 256 up (a space shows as ``"Ġ"``)."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=ord)  # the 256 characters
    printable = [b for b in range(256) if chr(b) in alphabet]
    shifted = [b for b in range(256) if chr(b) not in alphabet]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + k) for k, b in enumerate(shifted)})
    return table


def to_hf_tokenizer(tokenizer: Any) -> Any:
    """The course's tokenizer as a Hugging Face ``tokenizers.Tokenizer`` giving the same ids.

    * :class:`BPETokenizer`: a byte-level ``BPE`` model with the same merges in
      the same order (the earliest-learned merge applies first, as in
      :meth:`BPETokenizer.encode`), our split pattern, then bytes shown as GPT-2's
      printable characters; special tokens keep their ids after the merges.
    * :class:`WordTokenizer`: a ``WordLevel`` model over the same words, split on
      whitespace and then with :data:`WORD_PATTERN`; unknown words give ``unk_token``.
    * :class:`CharTokenizer`: a ``WordLevel`` model over single characters.
    * ``course_utils.data.ICLTokenizer``: a ``WordLevel`` model over its 24
      tokens, with ``<bos>`` added in front, as its ``encode`` does.

    Decoding follows Hugging Face's conventions, so the text may differ from our
    ``decode`` in spacing for the word-level tokenizers. ``save_hf`` writes it
    where ``transformers.PreTrainedTokenizerFast.from_pretrained`` finds it.
    """
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer

    if isinstance(tokenizer, BPETokenizer):
        show = _byte_to_unicode()
        as_text = {i: "".join(show[b] for b in tokenizer.vocab[i]) for i in range(256 + len(tokenizer.merges))}
        if len(set(as_text.values())) != len(as_text):
            raise ValueError("two ids of this BPE stand for the same bytes; Hugging Face's BPE needs one id per string")
        merges = [(as_text[a], as_text[b]) for (a, b) in tokenizer.merges]  # in the order they were learned
        hf = HFTokenizer(models.BPE({t: i for i, t in as_text.items()}, merges))
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(tokenizer.pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        hf.decoder = decoders.ByteLevel()
        specials = sorted(tokenizer.special_tokens.items(), key=lambda kv: kv[1])
        hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s, _ in specials])
    elif isinstance(tokenizer, (WordTokenizer, CharTokenizer)):
        vocab = {t: i for i, t in enumerate(tokenizer.itos)}
        hf = HFTokenizer(models.WordLevel(vocab, unk_token=tokenizer.unk_token))
        if isinstance(tokenizer, WordTokenizer):
            hf.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")])
            if tokenizer.lowercase:
                hf.normalizer = normalizers.Lowercase()
        else:
            hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
            hf.decoder = decoders.Fuse()  # characters joined without spaces
        hf.add_special_tokens([AddedToken(tokenizer.unk_token, special=True, normalized=False)])
    elif type(tokenizer).__name__ == "ICLTokenizer":
        hf = HFTokenizer(models.WordLevel({t: i for i, t in enumerate(tokenizer.itos)}, unk_token="<pad>"))
        hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<bos>", "<pad>")])
        hf.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tokenizer.bos_id)])
    else:
        raise TypeError(f"no Hugging Face form for {type(tokenizer).__name__}")
    return hf


def save_hf(tokenizer: Any, folder: str | os.PathLike) -> Path:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``folder`` (made if
    missing) so that ``transformers.PreTrainedTokenizerFast.from_pretrained(folder)``
    loads it, with its unknown, padding, start and end tokens named. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    to_hf_tokenizer(tokenizer).save(str(folder / "tokenizer.json"))
    named: dict[str, str] = {}
    if isinstance(tokenizer, BPETokenizer) and tokenizer.special_tokens:
        end = max(tokenizer.special_tokens, key=tokenizer.special_tokens.get)
        named = {"eos_token": end, "bos_token": end}
    elif isinstance(tokenizer, (WordTokenizer, CharTokenizer)):
        named = {"unk_token": tokenizer.unk_token}
    elif type(tokenizer).__name__ == "ICLTokenizer":
        named = {"bos_token": "<bos>", "pad_token": "<pad>"}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False, **named}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return folder


def compare_tokenizers(text: str, tokenizers: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Encode ``text`` with each tokenizer: token count, bytes per token, exact round-trip.

    Works with this module's tokenizers, ``tokenizers.Tokenizer`` and
    ``transformers`` tokenizers. Example::

        compare_tokenizers(text, {"ours": bpe, "hf": hf})
        # -> {"ours": {"tokens": ..., "bytes_per_token": ..., "round_trip": True}, "hf": {...}}
    """
    _check_text(text)
    n_bytes = len(text.encode("utf-8"))
    rows: dict[str, dict[str, Any]] = {}
    for name, tok in tokenizers.items():
        ids = tok.encode(text)
        ids = list(getattr(ids, "ids", ids))  # tokenizers.Encoding -> list of ids
        rows[name] = {
            "tokens": len(ids),
            "bytes_per_token": n_bytes / max(len(ids), 1),
            "round_trip": tok.decode(ids) == text,
        }
    return rows
