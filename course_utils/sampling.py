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
Training") and :func:`distinct_n` (a variant of the distinct-n of Li et al. 2016,
"A Diversity-Promoting Objective Function for Neural Conversation Models", who
divide by the number of generated tokens instead of the number of n-grams).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch

from .checks import check_int, check_number

__all__ = [
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "filtered_distribution",
    "sample_next",
    "decoding_loop",
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
    return check_number("temperature", temperature, low=0, low_open=True,
                        hint="use do_sample=False for greedy decoding")


def _check_top_k(k: int) -> int:
    return check_int("top_k", k, minimum=1, hint="or None for no top-k")


def _check_top_p(p: float) -> float:
    return check_number("top_p", p, 0, 1, low_open=True, hint="or None for no top-p")


def _check_settings(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Check the three sampling settings (``None`` = that filter is off)."""
    _check_temperature(temperature)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)


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
    _check_settings(temperature, top_k, top_p)
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
    _check_settings(temperature, top_k, top_p)
    return _choose(logits, do_sample, temperature, top_k, top_p, generator)


def _choose(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None) -> torch.Tensor:
    """:func:`sample_next` without the checks: ``(B, V)`` -> ``(B,)``."""
    if not do_sample:
        return logits.argmax(dim=-1)  # (B,)
    probs = _warp(logits, temperature, top_k, top_p).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


# --------------------------------------------------------------------------- the decoding loop


def decoding_loop(next_logits: Callable[[torch.Tensor], torch.Tensor], prompt: torch.Tensor, max_new_tokens: int,
                  do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, eos_token_id: int | None = None, pad_token_id: int = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Autoregressive decoding, the loop behind every model's ``generate``.

    Ask the model for the logits of the next token, choose one with
    :func:`sample_next`'s rule, append it, repeat::

        logits = next_logits(prompt)                   # (B, V)
        for each new position: token = choose(logits); ids = [ids, token]; logits = next_logits(ids)

    Args:
        next_logits: ``next_logits(ids) -> logits``: given every id so far,
            ``(B, t)``, the logits ``(B, V)`` of the token that follows. It is
            called first with the prompt, then once per new token (never after
            the last one). A model that keeps its past (a KV cache, an RNN
            state) reads only the ids it has not seen yet.
        prompt: ``(B, T)`` ids to continue.
        max_new_tokens: the most tokens to add, ``>= 0``.
        do_sample, temperature, top_k, top_p, generator: as in :func:`sample_next`
            (greedy by default; ``None`` = that filter is off).
        eos_token_id: a sequence that produced it is padded with ``pad_token_id``
            afterwards; the loop stops early once every sequence has.

    Returns ``(B, T + n)`` long ids, prompt included, ``n <= max_new_tokens``.
    The caller chooses the autograd mode: the models run it under
    ``torch.inference_mode()`` and hand back a copy made outside it.
    Example: a model whose next token is always the last one plus 1 continues
    ``[[1, 2]]`` by 3 tokens greedily to ``[[1, 2, 3, 4, 5]]``.
    """
    check_int("max_new_tokens", max_new_tokens, minimum=0)
    _check_settings(temperature, top_k, top_p)
    if eos_token_id is not None:
        check_int("eos_token_id", eos_token_id, minimum=0, hint="or None")
    B, T = prompt.shape
    out = torch.full((B, T + max_new_tokens), pad_token_id, dtype=torch.long, device=prompt.device)
    out[:, :T] = prompt
    if max_new_tokens == 0:
        return out
    logits = next_logits(prompt)  # (B, V)
    if eos_token_id is not None and eos_token_id >= logits.shape[-1]:
        raise ValueError(f"eos_token_id must be None or in [0, {logits.shape[-1]}) (the vocabulary), "
                         f"got {eos_token_id}")
    finished = torch.zeros(B, dtype=torch.bool, device=prompt.device)
    for i in range(max_new_tokens):
        if i > 0:
            logits = next_logits(out[:, :T + i])  # (B, V): what follows the token chosen last
        next_id = _choose(logits, do_sample, temperature, top_k, top_p, generator)  # (B,)
        if eos_token_id is not None:
            next_id = next_id.masked_fill(finished, pad_token_id)  # finished sequences get padding
            finished |= next_id == eos_token_id
        out[:, T + i] = next_id
        if eos_token_id is not None and bool(finished.all()):
            return out[:, :T + i + 1]  # every sequence has finished
    return out


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
    return check_int("n", n, minimum=1)


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
    (a variant of Li et al. 2016, who divide by the number of generated tokens,
    so that for ``n > 1`` their score stays below 1 even without repeats).
    1 means no n-gram is ever repeated, within or across sequences; sequences
    shorter than ``n`` contribute nothing; no n-grams at all gives 0. Example: ``distinct_n([[1, 2, 3], [1, 2, 4]], n=2)`` -> ``0.75``
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
