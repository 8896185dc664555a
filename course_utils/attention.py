"""Attention: the operation at the heart of the transformer.

Follows "Attention Is All You Need" (Vaswani et al., 2017), section 3.2:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

:func:`scaled_dot_product_attention` writes that formula out and returns the
attention weights too, so they can be plotted. :class:`MultiHeadAttention`
uses PyTorch's fused ``torch.nn.functional.scaled_dot_product_attention``
(flash / memory-efficient kernels where available) unless the weights are
asked for, in which case it runs the explicit version. The tests check that
both paths agree, and that this module agrees with ``torch.nn.MultiheadAttention``.

Mask convention (the same as PyTorch's SDPA): a boolean mask where ``True``
means "this query may attend to this key". Note that ``nn.MultiheadAttention``
uses the opposite convention (``True`` = blocked).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import check_int

__all__ = [
    "scaled_dot_product_attention",
    "causal_mask",
    "padding_mask",
    "make_attention_mask",
    "KVCache",
    "MultiHeadAttention",
    "rotary_cos_sin",
    "apply_rotary",
    "repeat_kv",
    "relative_position_bucket",
    "RelativePositionBias",
]


def _check_mask(mask: torch.Tensor, name: str = "mask") -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of dtype torch.bool, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must have dtype torch.bool (True = may attend), got {mask.dtype}")


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out, step by step.

    Args:
        q: queries ``(..., T_q, d)``.
        k: keys ``(..., T_k, d)``.
        v: values ``(..., T_k, d_v)``.
        mask: optional boolean mask broadcastable to ``(..., T_q, T_k)``;
            ``True`` where the query may attend to the key.
        dropout_p: dropout on the attention weights (use 0 at evaluation).
        scale: multiplier of the scores, default ``1 / sqrt(d)``.
        bias: optional float tensor broadcastable to ``(..., T_q, T_k)`` added
            to the scaled scores (T5's relative position bias).

    Returns:
        ``(output, weights)``: output ``(..., T_q, d_v)`` and the attention
        weights ``(..., T_q, T_k)``, each row summing to 1.

    Example: with one query equal to the second of two keys, most weight goes
    to the second key.
    """
    if q.dim() < 2 or k.dim() < 2 or v.dim() < 2:
        raise ValueError(
            f"q, k and v must have at least 2 dims (..., T, d); got shapes {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dim d; got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length T_k; got k {tuple(k.shape)} and v {tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T_q, T_k)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        _check_mask(mask)
        try:
            torch.broadcast_shapes(mask.shape, scores.shape)
        except RuntimeError as err:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape {tuple(scores.shape)}"
            ) from err
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., T_q, T_k)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights  # (..., T_q, d_v), (..., T_q, T_k)


def causal_mask(t_q: int, t_k: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(t_q, t_k)`` mask letting query ``i`` see keys ``0 .. i + (t_k - t_q)``.

    The queries are the *last* ``t_q`` positions of a sequence of ``t_k``
    (bottom-right alignment), which is what decoding with a key/value cache needs.

    Example: ``causal_mask(3)`` is lower-triangular:
    ``[[T, F, F], [T, T, F], [T, T, T]]``.
    """
    t_k = t_q if t_k is None else t_k
    if t_q < 1 or t_k < t_q:
        raise ValueError(f"need 1 <= t_q <= t_k, got t_q={t_q}, t_k={t_k}")
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Turn a Hugging Face-style ``(B, T)`` attention mask (1 = real token,
    0 = padding) into a boolean ``(B, 1, 1, T)`` key mask for attention.

    Example: ``padding_mask(torch.tensor([[1, 1, 0]]))[0, 0, 0]`` -> ``[True, True, False]``.
    """
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape (B, T), got {tuple(attention_mask.shape)}")
    if attention_mask.is_floating_point():
        raise ValueError(f"attention_mask must be bool or integer 0/1, got {attention_mask.dtype}")
    if attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must contain only 0 (padding) and 1 (real token)")
    return attention_mask.bool()[:, None, None, :]


def make_attention_mask(
    t_q: int,
    t_k: int,
    causal: bool,
    attention_mask: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Combine a causal mask and a key padding mask into one boolean mask.

    Returns ``None`` when nothing is masked (the fast path), else a mask of
    shape ``(B or 1, 1, t_q, t_k)``. Each query may always attend to its own
    position, so a query that sits on padding never has an empty row (that
    would make softmax return NaN); its output is ignored anyway.
    """
    mask = None
    if causal and t_q > 1:
        mask = causal_mask(t_q, t_k, device=device)[None, None]  # (1, 1, t_q, t_k)
    if attention_mask is not None:
        if attention_mask.shape[-1] != t_k:
            raise ValueError(
                f"attention_mask must cover all {t_k} key positions, got shape {tuple(attention_mask.shape)}"
            )
        keys = padding_mask(attention_mask).to(device)  # (B, 1, 1, t_k)
        if bool(keys.all()):
            return mask
        mask = keys if mask is None else mask & keys
        own = torch.zeros(t_q, t_k, dtype=torch.bool, device=device)
        own[torch.arange(t_q), torch.arange(t_k - t_q, t_k)] = True
        mask = mask | own  # (B, 1, t_q, t_k)
    return mask


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary position embedding tables (RoPE, Su et al., 2021) for ``positions`` ``(T,)``.

    Dimension pair ``i`` of a head (``i`` and ``i + head_dim / 2``: the halves
    convention of GPT-NeoX and Llama) is rotated by the angle ``position *
    theta ** (-2i / head_dim)``: fast-turning pairs tell near positions apart,
    slow ones far positions. Returns ``cos, sin``, each ``(T, head_dim)`` in fp32.
    """
    check_int("head_dim", head_dim, minimum=2)
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim): each angle for both members of its pair
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair ``(x_i, x_{i + d/2})`` of ``x`` ``(B, n_head, T, d)`` by its
    angle (tables ``(T, d)`` from :func:`rotary_cos_sin`). The dot product of a
    rotated query and key then depends only on their distance."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated_half = torch.cat([-x2, x1], dim=-1)  # (x1, x2) -> (-x2, x1): a quarter turn of every pair
    return x * cos.to(x.dtype) + rotated_half * sin.to(x.dtype)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: ``(B, n_kv_head, T, d) -> (B, n_kv_head * n_rep, T, d)``,
    each key/value head repeated for the ``n_rep`` query heads of its group
    (query head ``h`` reads key/value head ``h // n_rep``)."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """T5's buckets for ``relative_position = key position - query position`` (any shape, integers).

    The buckets of one direction (all ``num_buckets`` for a causal decoder,
    which only looks back; half of them each way for a bidirectional encoder)
    are split in two: the first half hold one exact distance each,
    ``0 .. n_exact - 1``, the second half cover larger distances on a
    logarithmic scale up to ``max_distance``, beyond which every distance
    shares the last bucket (Raffel et al., 2020, section 2.1). Returns bucket ids in ``[0, num_buckets)``, same shape.
    """
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).long() * num_buckets  # keys to the right: upper half
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)  # a causal decoder never sees keys to the right
    n_exact = num_buckets // 2
    # log-spaced buckets from n_exact to max_distance (distance 0 never reaches the log: where() picks exact)
    log_ratio = torch.log(distance.float().clamp(min=1) / n_exact) / math.log(max_distance / n_exact)
    far = n_exact + (log_ratio * (num_buckets - n_exact)).long()
    far = far.clamp(max=num_buckets - 1)
    return bucket + torch.where(distance < n_exact, distance, far)


class RelativePositionBias(nn.Module):
    """A learned bias per head and per bucket of relative distance, added to the
    attention scores: ``(T_q, T_k)`` positions -> ``(1, n_head, T_q, T_k)``.

    T5 has one such table per stack (encoder, decoder), shared by all its blocks.
    """

    def __init__(self, n_head: int, num_buckets: int = 32, max_distance: int = 128,
                 bidirectional: bool = True) -> None:
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.relative_attention_bias = nn.Embedding(num_buckets, n_head)

    def forward(self, t_q: int, t_k: int, past: int = 0) -> torch.Tensor:
        """Bias for queries at positions ``past .. past + t_q - 1`` and keys at ``0 .. t_k - 1``."""
        device = self.relative_attention_bias.weight.device
        query = torch.arange(past, past + t_q, device=device)[:, None]  # (T_q, 1)
        key = torch.arange(t_k, device=device)[None, :]  # (1, T_k)
        buckets = relative_position_bucket(key - query, self.bidirectional, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # (1, n_head, T_q, T_k)


class KVCache:
    """Keys and values of the tokens seen so far, for one attention layer.

    Preallocated to ``max_len`` positions so decoding never copies the past:
    each step writes its new keys and values in place and reads a view.
    Shapes: ``k, v`` are ``(B, n_head, max_len, head_dim)``; ``length`` counts
    the filled positions.
    """

    def __init__(self, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.k = torch.empty(batch_size, n_head, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v`` of shape ``(B, n_head, T_new, head_dim)`` and return all
        keys and values so far, ``(B, n_head, length, head_dim)``."""
        t_new = k.shape[2]
        if self.length + t_new > self.max_len:
            raise ValueError(
                f"KV cache holds {self.max_len} positions; {self.length} are used and {t_new} more were given"
            )
        # narrow() is slicing along dim 2 (a view), cheaper to dispatch than [:, :, a:b] at every step
        self.k.narrow(2, self.length, t_new).copy_(k)
        self.v.narrow(2, self.length, t_new).copy_(v)
        self.length += t_new
        return self.k.narrow(2, 0, self.length), self.v.narrow(2, 0, self.length)


class MultiHeadAttention(nn.Module):
    """Multi-head attention, for self-attention or cross-attention.

    Self-attention projects queries, keys and values from ``x`` with one fused
    ``(C, 3C)`` matmul (``c_attn``); with grouped-query attention
    (``n_kv_head < n_head``, Ainslie et al., 2023) keys and values have only
    ``n_kv_head`` heads, each shared by ``n_head / n_kv_head`` query heads, so the
    matmul is ``(C, C + 2 * n_kv_head * head_dim)`` and the KV cache shrinks by
    the same factor. Cross-attention (``cross=True``) projects
    queries from ``x`` (``q_proj``) and keys and values from the encoder's
    output ``context`` (``kv_proj``). Heads are split with a reshape, never a
    Python loop: ``(B, T, C) -> (B, n_head, T, head_dim)``.

    Args:
        n_embd: model width ``C``.
        n_head: number of heads; must divide ``n_embd`` unless ``head_dim`` is given.
        dropout: dropout on attention weights and on the output.
        bias: whether the projections have biases.
        cross: cross-attention instead of self-attention.
        scale: score multiplier, default ``1 / sqrt(head_dim)``.
        n_kv_head: key/value heads (grouped-query attention); ``None`` = ``n_head``.
        qkv_bias: biases on the query, key and value projections only
            (Qwen2 has them, its output projection has none); ``None`` = ``bias``.
        head_dim: width of each head; ``None`` = ``n_embd // n_head``. T5 sets
            it apart from the model width (heads x head_dim need not be ``n_embd``).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 cross: bool = False, scale: float | None = None, n_kv_head: int | None = None,
                 qkv_bias: bool | None = None, head_dim: int | None = None) -> None:
        super().__init__()
        check_int("n_embd", n_embd, minimum=1)
        check_int("n_head", n_head, minimum=1)
        if head_dim is None:
            if n_embd % n_head != 0:
                raise ValueError(f"n_head must divide n_embd, got n_embd={n_embd} and n_head={n_head}")
            head_dim = n_embd // n_head
        check_int("head_dim", head_dim, minimum=1)
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        check_int("n_kv_head", n_kv_head, minimum=1)
        if n_head % n_kv_head != 0:
            raise ValueError(f"n_kv_head must divide n_head, got n_head={n_head} and n_kv_head={n_kv_head}")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, head_dim
        self.n_kv_head = n_kv_head
        self.cross = cross
        self.dropout = dropout
        self.scale = scale
        qkv_bias = bias if qkv_bias is None else qkv_bias
        q_width, kv_width = n_head * head_dim, n_kv_head * head_dim  # q_width = n_embd unless head_dim is set
        if cross:
            self.q_proj = nn.Linear(n_embd, q_width, bias=qkv_bias)
            self.kv_proj = nn.Linear(n_embd, 2 * kv_width, bias=qkv_bias)
        else:
            self.c_attn = nn.Linear(n_embd, q_width + 2 * kv_width, bias=qkv_bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(q_width, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, width = t.shape
        return t.view(B, T, width // self.head_dim, self.head_dim).transpose(1, 2)  # (B, nh or n_kv, T, hd)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        need_weights: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend.

        Args:
            x: ``(B, T, C)`` the queries' inputs (and keys'/values' for self-attention).
            context: ``(B, S, C)`` encoder output, required for cross-attention.
            mask: optional boolean ``(B or 1, 1 or n_head, T, S_total)``, True = may attend.
            is_causal: causal self-attention without an explicit mask (the fast path);
                only valid when queries and keys are the same positions.
            cache: a :class:`KVCache`. Self-attention appends the new keys and
                values and attends over everything cached; cross-attention fills it
                from ``context`` once and reuses it afterwards.
            need_weights: also return the attention weights (explicit path).
            rope: rotary tables ``(cos, sin)``, each ``(T, head_dim)``, for the
                positions of ``x``: queries and keys are rotated before the keys
                are cached (self-attention only).
            bias: float ``(B or 1, n_head, T, S_total)`` added to the scores
                (T5's relative position bias).

        Returns:
            ``(y, weights)``: ``y`` is ``(B, T, C)``; ``weights`` is
            ``(B, n_head, T, S_total)`` or ``None``.
        """
        if x.dim() != 3 or x.shape[-1] != self.n_embd:
            raise ValueError(f"x must have shape (B, T, {self.n_embd}), got {tuple(x.shape)}")
        B, T, C = x.shape
        if self.cross:
            q, k, v = self._cross_qkv(x, context, cache)  # (B, nh, T, hd), (B, nh, S, hd) x 2
        else:
            q, k, v = self._self_qkv(x, cache, rope)  # (B, nh, T, hd), (B, n_kv, T_past + T, hd) x 2
        k = repeat_kv(k, self.n_head // self.n_kv_head)  # (B, nh, S_total, hd): one key/value head per query head
        v = repeat_kv(v, self.n_head // self.n_kv_head)
        y, weights = self._attend(q, k, v, mask, is_causal, need_weights, bias)  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # heads side by side again
        return self.resid_dropout(self.c_proj(y)), weights

    def _self_qkv(self, x: torch.Tensor, cache: KVCache | None,
                  rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        """Queries ``(B, nh, T, hd)``, keys and values ``(B, n_kv, T, hd)`` of ``x``
        ``(B, T, C)`` from one fused matmul, rotated by ``rope`` if given; with a
        cache, the keys and values of the past come first."""
        kv_width = self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([self.n_head * self.head_dim, kv_width, kv_width], dim=2)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, nh, T, hd), (B, n_kv, T, hd) x 2
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, nh, T_past + T, hd)
        return q, k, v

    def _cross_qkv(self, x: torch.Tensor, context: torch.Tensor | None,
                   cache: KVCache | None) -> tuple[torch.Tensor, ...]:
        """Queries of ``x`` ``(B, T, C)``; keys and values of the encoder output
        ``context`` ``(B, S, C)``, projected once and then read from the cache if one is given."""
        q = self._heads(self.q_proj(x))  # (B, nh, T, hd)
        if cache is not None and cache.length > 0:  # context was projected at the first step
            return q, cache.k[:, :, :cache.length], cache.v[:, :, :cache.length]
        B, _, C = x.shape
        if context is None or context.dim() != 3 or context.shape[-1] != C or context.shape[0] != B:
            shape = None if context is None else tuple(context.shape)
            raise ValueError(f"cross-attention needs context of shape ({B}, S, {C}), got {shape}")
        k, v = self.kv_proj(context).split(self.n_kv_head * self.head_dim, dim=2)  # (B, S, kv) each
        k, v = self._heads(k), self._heads(v)  # (B, n_kv, S, hd)
        if cache is not None:
            k, v = cache.append(k, v)
        return q, k, v

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, need_weights: bool,
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention over the heads: ``(B, nh, T, hd)`` queries, ``(B, nh, S, hd)``
        keys and values -> ``(B, nh, T, hd)`` and the weights ``(B, nh, T, S)`` or ``None``.

        The fused kernel (``F.scaled_dot_product_attention``) does the work
        unless the weights are wanted; then the explicit version runs. Causality
        is the kernel's ``is_causal`` flag when nothing else is masked, else part of the mask.
        """
        T = q.shape[2]
        if is_causal and k.shape[2] != T:
            raise ValueError("is_causal=True needs as many keys as queries; pass an explicit mask with a cache")
        if mask is not None:
            _check_mask(mask)
        if is_causal and (mask is not None or need_weights or bias is not None):  # causality in an explicit mask
            causal = causal_mask(T, device=q.device)  # (T, T)
            mask, is_causal = (causal if mask is None else mask & causal), False
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            return scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=dropout_p, scale=self.scale, bias=bias)
        if bias is not None:  # the fused kernel takes one float mask: the bias, and -inf where masked
            bias = bias.to(q.dtype)
            mask = bias if mask is None else torch.where(mask, bias, float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal,
                                           scale=self.scale)
        return y, None
