"""Synthetic tasks: associative recall, copying, in-context learning and a toy translation.

* associative recall (Ba et al. 2016, "Using Fast Weights to Attend to the
  Recent Past"; Arora et al. 2023, "Zoology"): key-value pairs, then a query key;
* copying a random sequence after a separator;
* in-context learning as task identification (Xie et al. 2022, "An
  Explanation of In-context Learning as Implicit Bayesian Inference"): k
  examples ``x -> f(x)`` of an unnamed mapping, then a query;
* a toy English -> made-up-language translation with reordering, for the
  encoder-decoder.

Each comes back as a Hugging Face ``datasets.Dataset`` (``datasets`` is
imported inside the functions); ``labels`` follow the Hugging Face convention
(aligned with ``input_ids``, ``-100`` where the loss ignores a position).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable

from ..checks import check_int
from ..transformer import IGNORE_INDEX
from ._common import _check_fraction

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

__all__ = ["associative_recall", "copy_task", "ICL_TASKS", "ICLTokenizer", "icl_tasks",
           "icl_eval_sets", "translate", "translation_pairs"]


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

    inputs, targets = _recall_rows(n_samples, n_pairs, vocab_size, random.Random(seed))
    return Dataset.from_dict({"input_ids": inputs, "target": targets})


def _check_recall_sizes(n_pairs: int, vocab_size: int) -> None:
    check_int("n_pairs", n_pairs, 1)
    check_int("vocab_size", vocab_size, 2)
    if n_pairs > vocab_size // 2:
        raise ValueError(f"n_pairs must be <= vocab_size // 2 = {vocab_size // 2} (keys are distinct), got {n_pairs}")


def _recall_rows(n_samples: int, n_pairs: int, vocab_size: int,
                 rng: random.Random) -> tuple[list[list[int]], list[int]]:
    """The sequences ``[k_1, v_1, ..., k_n, v_n, q]`` of :func:`associative_recall` and
    their targets, drawn with ``rng`` (also used by :func:`course_utils.rnn.recall_batch`)."""
    check_int("n_samples", n_samples, 1)
    _check_recall_sizes(n_pairs, vocab_size)
    n_keys = vocab_size // 2
    inputs, targets = [], []
    for _ in range(n_samples):
        keys = rng.sample(range(n_keys), n_pairs)
        values = [rng.randrange(n_keys, vocab_size) for _ in keys]
        i = rng.randrange(n_pairs)
        inputs.append([t for kv in zip(keys, values) for t in kv] + [keys[i]])
        targets.append(values[i])
    return inputs, targets


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

    input_ids, labels, xs = _copy_rows(n_samples, length, vocab_size, random.Random(seed))
    return Dataset.from_dict({"input_ids": input_ids, "labels": labels, "target": xs})


def _copy_rows(n_samples: int, length: int, vocab_size: int,
               rng: random.Random) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """``input_ids``, ``labels`` and ``target`` of :func:`copy_task`, drawn with ``rng``
    (also used by :func:`course_utils.rnn.copy_batch`)."""
    check_int("n_samples", n_samples, 1)
    check_int("length", length, 1)
    check_int("vocab_size", vocab_size, 2)
    sep = vocab_size - 1
    xs = [[rng.randrange(sep) for _ in range(length)] for _ in range(n_samples)]
    return [x + [sep] + x for x in xs], [[IGNORE_INDEX] * (length + 1) + x for x in xs], xs


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

    check_int("n_samples", n_samples, 1)
    check_int("max_k", max_k, 0)
    if max_k > 19:
        raise ValueError(f"max_k must be <= 19 (20 symbols, one kept for the query), got {max_k}")
    if k is not None:
        check_int("k", k, 0)
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

    check_int("n", n, 1)
    _check_fraction("adjective_probability", adjective_probability, low_open=False, high_open=False)
    rng = random.Random(seed)

    def phrase() -> list[str]:
        adj = [rng.choice(_ADJS)] if rng.random() < adjective_probability else []
        return [rng.choice(_DETS)] + adj + [rng.choice(_NOUNS)]

    sources = [" ".join(phrase() + [rng.choice(_VERBS)] + phrase()) for _ in range(n)]
    return Dataset.from_dict({"source": sources, "target": [translate(s) for s in sources]})

