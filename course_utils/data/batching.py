"""Batching: fixed-size blocks and random windows of a token stream, and three collators.

:func:`causal_lm_blocks` cuts a stream into blocks, :func:`random_batch` draws
random windows (as in nanoGPT's ``get_batch``); the collators pad a list of
sequences for a causal LM (:class:`CausalLMCollator`), apply BERT masking
(:class:`MaskedLMCollator`; Devlin et al. 2019, section 3.1) or T5 span
corruption (:class:`SpanCorruptionCollator`; Raffel et al. 2020, section
3.1.4, with the ``random_spans_noise_mask`` algorithm of the T5 code base).
Batches are dicts of tensors with Hugging Face names, so ``model(**batch)``
works; ``labels`` are aligned with ``input_ids`` (the model shifts them) and
``-100`` marks positions the loss ignores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..checks import check_int
from ..transformer import IGNORE_INDEX
from ._common import _check_fraction

__all__ = ["causal_lm_blocks", "random_batch", "CausalLMCollator", "MaskedLMCollator",
           "random_spans_noise_mask", "span_corrupt", "SpanCorruptionCollator"]


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
    check_int("block_size", block_size, 1)
    stride = block_size if stride is None else stride
    check_int("stride", stride, 1)
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
    check_int("block_size", block_size, 1)
    check_int("batch_size", batch_size, 1)
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
        check_int("pad_token_id", pad_token_id, 0)
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
        check_int("vocab_size", vocab_size, 2)
        for name, value in (("mask_token_id", mask_token_id), ("pad_token_id", pad_token_id)):
            check_int(name, value, 0)
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
    check_int("length", length, 1)
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
            check_int("num_sentinels", num_sentinels, 1)
            check_int("first_sentinel_id", first_sentinel_id, num_sentinels - 1)
            sentinel_ids = [first_sentinel_id - i for i in range(num_sentinels)]
        if len(sentinel_ids) == 0 or len(set(sentinel_ids)) != len(sentinel_ids):
            raise ValueError(f"sentinel_ids must be non-empty and distinct, got {list(sentinel_ids)}")
        _check_fraction("noise_density", noise_density)
        if mean_span_length < 1:
            raise ValueError(f"mean_span_length must be >= 1, got {mean_span_length}")
        check_int("pad_token_id", pad_token_id, 0)
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
