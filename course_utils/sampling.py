"""Generation settings: temperature, top-k and top-p, and how repetitive the result is.

A language model gives one vector of logits ``(B, V)`` per step; a decoding
strategy turns it into the next token. This module implements the settings the
chapter "Generation settings" discusses, with exactly the semantics of Hugging
Face ``generate`` (``transformers.generation.logits_process``):

* :func:`apply_temperature` divides the logits by ``T`` (``TemperatureLogitsWarper``);
* :func:`top_k_filter` keeps the ``k`` largest logits *and every logit tied with
  the k-th*, since the test is ``logits < kth_value`` (``TopKLogitsWarper``);
* :func:`top_p_filter` (nucleus sampling, Holtzman et al. 2020, "The Curious Case
  of Neural Text Degeneration") sorts ascending, removes the tokens whose
  cumulative probability is at most ``1 - p`` and always keeps the most likely
  token (``TopPLogitsWarper`` with ``min_tokens_to_keep=1``);
* :func:`sample_next` applies them in ``generate``'s order (temperature, then
  top-k, then top-p), then samples with ``torch.multinomial``, or takes the
  argmax when ``do_sample=False`` (greedy decoding).

Filtered logits are set to ``-inf`` (Hugging Face's ``filter_value``), so the
softmax gives them probability exactly 0.

One deliberate difference from Hugging Face: here ``top_k=None`` and
``top_p=None`` mean *off*. In ``generate``, ``do_sample=True`` on its own also
applies ``top_k=50`` (the default of ``GenerationConfig``); to reproduce that,
pass ``top_k=50`` explicitly.

Two small metrics measure degeneration: :func:`repetition_rate` (the
"seq-rep-n" of Welleck et al. 2020, "Neural Text Generation with Unlikelihood
Training") and :func:`distinct_n` (Li et al. 2016, "A Diversity-Promoting
Objective Function for Neural Conversation Models").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "filtered_distribution",
    "sample_next",
    "repetition_rate",
    "distinct_n",
]

FILTER_VALUE = float("-inf")  # what a removed token's logit becomes, as in Hugging Face


# --------------------------------------------------------------------------- checks


def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor of shape (..., V), got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (..., V) with V >= 1, got {tuple(logits.shape)}")


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a real number > 0, got {type(temperature).__name__}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"temperature must be a finite number > 0 (use do_sample=False for greedy decoding), got {temperature}"
        )
    return float(temperature)


def _check_top_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"top_k must be an integer >= 1 (or None for no top-k), got {k!r}")
    if k < 1:
        raise ValueError(f"top_k must be an integer >= 1 (or None for no top-k), got {k}")
    return int(k)


def _check_top_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise ValueError(f"top_p must be a number in (0, 1] (or None for no top-p), got {p!r}")
    if not (0 < p <= 1):  # also False for nan
        raise ValueError(f"top_p must be in (0, 1] (or None for no top-p), got {p}")
    return float(p)


# --------------------------------------------------------------------------- filters


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits ``(..., V)`` by ``temperature`` (> 0); returns a new tensor.

    ``T < 1`` sharpens the distribution, ``T > 1`` flattens it, ``T -> 0`` tends
    to greedy decoding. Example: ``apply_temperature(tensor([2., 0.]), 2.0)``
    -> ``tensor([1., 0.])``.
    """
    _check_logits(logits)
    return logits / _check_temperature(temperature)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest to ``-inf``; shape ``(..., V)`` kept.

    Ties with the k-th largest value are *kept* (as in Hugging Face), so more
    than ``k`` tokens can survive; ``k >= V`` keeps everything. Example:
    ``top_k_filter(tensor([3., 1., 1., 0.]), 2)`` -> ``tensor([3., 1., 1., -inf])``.
    """
    _check_logits(logits)
    k = min(_check_top_k(k), logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, FILTER_VALUE)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose total
    probability exceeds ``p``; the others become ``-inf``. Shape ``(..., V)`` kept.

    Exactly Hugging Face's rule: sort the probabilities ascending, remove the
    tokens whose cumulative probability is ``<= 1 - p``, never remove the most
    likely token. Tied tokens are ordered by ``torch.sort``, as in Hugging Face.
    ``p == 1`` returns the logits unchanged (``generate`` skips top-p then).
    Example: ``top_p_filter(tensor([3., 2., 1., .5, -1.]), 0.7)`` keeps the
    first two (probabilities 0.62 and 0.23; the other three sum to 0.15 <= 0.3).
    """
    _check_logits(logits)
    p = _check_top_p(p)
    if p == 1.0:
        return logits.clone()
    sorted_logits, sorted_index = torch.sort(logits, dim=-1, descending=False)  # (..., V) each
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (..., V), ends at 1
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -1:] = False  # always keep the most likely token
    remove = remove_sorted.scatter(-1, sorted_index, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, FILTER_VALUE)


def _warp(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """Temperature, then top-k, then top-p: the order of ``generate``."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # generate also works on float32 scores
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


def filtered_distribution(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The distribution :func:`sample_next` draws from: probabilities ``(..., V)``.

    Applies temperature, then top-k, then top-p (``None`` = off), then softmax;
    removed tokens get probability exactly 0. 16-bit logits are upcast to
    float32 first, as ``generate`` does. Example:
    ``filtered_distribution(tensor([3., 2., 1., .5, -1.]), temperature=2.0, top_p=0.7)``
    -> about ``[0.51, 0.31, 0.19, 0, 0]``.
    """
    _check_logits(logits)
    _check_temperature(temperature)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    return _warp(logits, temperature, top_k, top_p).softmax(dim=-1)


def sample_next(
    logits: torch.Tensor,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token for each row of ``logits`` ``(B, V)``; returns ``(B,)`` long.

    * ``do_sample=False``: greedy decoding, ``argmax`` (the first index wins a
      tie); ``temperature``, ``top_k`` and ``top_p`` are checked but unused.
    * ``do_sample=True``: temperature, then top-k, then top-p (``generate``'s
      order), softmax, and one ``torch.multinomial`` draw per row using
      ``generator`` (seed it for repeatable draws; it must live on the logits'
      device).

    Unlike Hugging Face, ``top_k=None`` means no top-k even when sampling
    (``generate`` silently uses ``top_k=50``); pass ``top_k=50`` to match it.
    Example: ``sample_next(tensor([[0., 5., 1.]]))`` -> ``tensor([1])``.
    """
    _check_logits(logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, V), got {tuple(logits.shape)}")
    _check_temperature(temperature)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    if not do_sample:
        return logits.argmax(dim=-1)  # (B,)
    probs = _warp(logits, temperature, top_k, top_p).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


# --------------------------------------------------------------------------- metrics


def _as_tokens(seq: Sequence | torch.Tensor, name: str) -> list:
    if isinstance(seq, torch.Tensor):
        if seq.dim() != 1:
            raise ValueError(f"{name} must be a 1-D sequence of tokens, got a tensor of shape {tuple(seq.shape)}")
        return seq.tolist()
    if isinstance(seq, (str, bytes)) or isinstance(seq, Sequence):
        return list(seq)
    raise TypeError(f"{name} must be a sequence of tokens (list, tuple, str or 1-D tensor), got {type(seq).__name__}")


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return int(n)


def _ngrams(tokens: list, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repetition_rate(ids: Sequence | torch.Tensor, n: int = 4) -> float:
    """Fraction of the n-grams of one sequence that repeat an earlier one:
    ``1 - distinct / total`` ("seq-rep-n", Welleck et al. 2020).

    0 means no n-gram occurs twice; values near 1 mean the text loops.
    A sequence with fewer than ``n`` tokens has no n-grams and scores 0.
    Example: ``repetition_rate([1, 2, 1, 2, 1], n=2)`` -> ``0.5``
    (bigrams 12, 21, 12, 21: four, two distinct).
    """
    n = _check_n(n)
    grams = _ngrams(_as_tokens(ids, "ids"), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def distinct_n(sequences: Sequence, n: int = 2) -> float:
    """Distinct n-grams over total n-grams, pooled over many generated sequences
    (Li et al. 2016). 1 means no n-gram is ever repeated, within or across
    sequences; sequences shorter than ``n`` contribute nothing; no n-grams at
    all gives 0. Example: ``distinct_n([[1, 2, 3], [1, 2, 4]], n=2)`` -> ``0.75``
    (bigrams 12, 23, 12, 24: four, three distinct).
    """
    n = _check_n(n)
    if isinstance(sequences, (str, bytes, torch.Tensor)) or not isinstance(sequences, Sequence):
        raise TypeError(
            f"sequences must be a list of token sequences, got {type(sequences).__name__}"
        )
    grams: list[tuple] = []
    for i, seq in enumerate(sequences):
        if isinstance(seq, numbers.Number):
            raise TypeError(
                f"sequences must be a list of token sequences, but sequences[{i}] is a single "
                f"{type(seq).__name__}; wrap one sequence as [seq]"
            )
        grams.extend(_ngrams(_as_tokens(seq, f"sequences[{i}]"), n))
    if not grams:
        return 0.0
    return len(set(grams)) / len(grams)
