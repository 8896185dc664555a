"""The transformer and its three variants, built from one set of blocks.

* :class:`EncoderOnlyLM`: BERT (Devlin et al., 2019). Bidirectional
  self-attention, post-norm blocks, a masked-LM head. ``from_hf`` loads a
  ``transformers.BertForMaskedLM``.
* :class:`DecoderOnlyLM`: GPT-2 (Radford et al., 2019). Causal self-attention,
  pre-norm blocks, the LM head tied to the token embedding. ``from_hf`` loads a
  ``transformers.GPT2LMHeadModel`` (and Llama and Qwen2 models, below).
* :class:`EncoderDecoderLM`: the original encoder-decoder of Vaswani et al.
  (2017), trained like T5 (Raffel et al., 2020) with span corruption. By
  default it uses the same pre-norm blocks as the decoder-only model plus
  cross-attention, and learned absolute positions; T5's own choices (RMSNorm,
  relative position biases, its feed-forward kinds and scaling conventions)
  are named options, and ``from_hf`` loads a ``transformers.T5ForConditionalGeneration``.

The options of today's decoders (RMSNorm, rotary positions, a gated MLP,
grouped-query attention, an untied head) are fields of :class:`TransformerConfig`
whose defaults are GPT-2's, so the book's models are unchanged; ``DecoderOnlyLM.from_hf``
also loads Llama (SmolLM2) and Qwen2 checkpoints.

All three follow the Hugging Face calling convention, so a batch dict from the
collators in :mod:`course_utils.data` can be passed as ``model(**batch)``; each
returns ``(logits, loss)``, with ``loss=None`` when no ``labels`` are given.

Why one file of this size: the three variants are built from one set of blocks,
and keeping them side by side is the point of the chapter (what differs between
BERT, GPT-2 and T5 is visible in one place); the attention layer itself lives
in :mod:`course_utils.attention`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import KVCache, MultiHeadAttention, RelativePositionBias, make_attention_mask, rotary_cos_sin
from .checks import check_int, check_number, check_one_of
from .device import evaluating
from .sampling import decoding_loop

__all__ = [
    "TransformerConfig",
    "RMSNorm",
    "MLP",
    "Block",
    "EncoderOnlyLM",
    "DecoderOnlyLM",
    "EncoderDecoderLM",
    "init_weights",
]

IGNORE_INDEX = -100  # label value that the loss skips (PyTorch's and Hugging Face's default)


@dataclass
class TransformerConfig:
    """Sizes and options shared by the three models."""

    vocab_size: int = 256  # number of token ids
    block_size: int = 128  # context window: the most positions one forward pass sees
    n_layer: int = 4  # blocks in the encoder, or in the decoder of a decoder-only model
    n_decoder_layer: int | None = None  # encoder-decoder only: decoder blocks (None = n_layer)
    n_head: int = 4  # attention heads per block; must divide n_embd
    n_embd: int = 128  # model width C
    n_inner: int | None = None  # MLP hidden width (None = 4 * n_embd)
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches
    bias: bool = True  # biases in Linear layers and LayerNorms
    layer_norm_eps: float = 1e-5  # GPT-2 uses 1e-5, BERT 1e-12
    activation: str = "gelu"  # "gelu" (exact, BERT), "gelu_tanh" (GPT-2), "silu" (Llama), "relu" (T5)
    pad_token_id: int = 0  # padding id; also the decoder start token of the encoder-decoder
    # Options of today's decoders (chapter 5, "From GPT-2 to today's decoders"); the defaults are GPT-2's.
    norm: str = "layernorm"  # "layernorm" or "rmsnorm" (Llama, Qwen2, T5: no mean, no bias)
    position: str = "learned"  # "learned" (a wpe table), "rope" (rotary, on queries and keys; decoder-only)
    #                            or "relative" (T5's bucketed bias on the scores; encoder-decoder only)
    rope_theta: float = 10000.0  # RoPE's base: the slowest pair turns once every ~2 pi theta positions
    relative_buckets: int = 32  # T5: buckets of relative distance, one learned bias per head and bucket
    relative_max_distance: int = 128  # T5: distances beyond this share the last bucket
    head_size: int | None = None  # width of each attention head (None = n_embd // n_head; T5 sets d_kv)
    scale_scores: bool = True  # divide attention scores by sqrt(head width); T5 does not (folded into its init)
    scale_head_input: bool = False  # T5 (v1.0): multiply the last hidden state by n_embd ** -0.5 before the head
    mlp: str = "plain"  # "plain": act(x W1) W2; "gated": (act(x Wg) * x W1) W2 (SwiGLU with "silu")
    n_kv_head: int | None = None  # key/value heads, grouped-query attention (None = n_head)
    tie_embeddings: bool = True  # LM head shares the token embedding (GPT-2) or has its own (Llama 3, Qwen2-7B)
    qkv_bias: bool | None = None  # biases on q, k, v only (Qwen2); None = bias

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("n_decoder_layer", "n_inner"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1, hint="or None")
        if self.head_size is not None:
            check_int("head_size", self.head_size, minimum=1, hint="or None")
        elif self.n_embd % self.n_head != 0:
            raise ValueError(f"n_head must divide n_embd, got n_embd={self.n_embd} and n_head={self.n_head}")
        check_number("dropout", self.dropout, 0, 1, high_open=True)
        check_one_of("activation", self.activation, tuple(_ACTIVATIONS))
        check_one_of("norm", self.norm, ("layernorm", "rmsnorm"))
        check_one_of("position", self.position, ("learned", "rope", "relative"))
        check_int("relative_buckets", self.relative_buckets, minimum=4)
        check_int("relative_max_distance", self.relative_max_distance, minimum=self.relative_buckets // 2)
        check_one_of("mlp", self.mlp, ("plain", "gated"))
        check_number("rope_theta", self.rope_theta, low=1, low_open=True)
        if self.n_kv_head is not None:
            check_int("n_kv_head", self.n_kv_head, minimum=1, hint="or None")
            if self.n_head % self.n_kv_head:
                raise ValueError(f"n_kv_head must divide n_head, got n_head={self.n_head} and n_kv_head={self.n_kv_head}")
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(f"position='rope' needs an even head size, got n_embd / n_head = {self.head_dim}")
        check_int("pad_token_id", self.pad_token_id, 0, self.vocab_size - 1, hint=f"vocab_size={self.vocab_size}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head if self.head_size is None else self.head_size

    @property
    def inner(self) -> int:
        return 4 * self.n_embd if self.n_inner is None else self.n_inner

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TransformerConfig fields {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**d)


_ACTIVATIONS = {"gelu": lambda: nn.GELU(), "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
                "silu": lambda: nn.SiLU(), "relu": lambda: nn.ReLU()}


class RMSNorm(nn.Module):
    """Root-mean-square normalization (Zhang & Sennrich, 2019): ``x / rms(x) * g``.

    LayerNorm without the mean subtraction and without a bias; Llama, Qwen2
    and T5 use it. Computed in fp32 whatever the input dtype. ``(..., C) -> (..., C)``.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def _norm(config: TransformerConfig) -> nn.Module:
    """The normalization layer the config names, over the model width."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)


class MLP(nn.Module):
    """Position-wise feed-forward network: ``(B, T, C) -> (B, T, inner) -> (B, T, C)``.

    ``mlp="plain"``: ``c_proj(act(c_fc(x)))``. ``mlp="gated"`` (Shazeer, 2020;
    SwiGLU with ``activation="silu"``): a second projection ``c_gate`` decides,
    feature by feature, how much of ``c_fc(x)`` passes: ``c_proj(act(c_gate(x)) * c_fc(x))``.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.c_gate = nn.Linear(config.n_embd, config.inner, bias=config.bias) if config.mlp == "gated" else None
        self.c_fc = nn.Linear(config.n_embd, config.inner, bias=config.bias)
        self.act = _ACTIVATIONS[config.activation]()
        self.c_proj = nn.Linear(config.inner, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.c_gate is None:
            return self.dropout(self.c_proj(self.act(self.c_fc(x))))
        return self.dropout(self.c_proj(self.act(self.c_gate(x)) * self.c_fc(x)))


class Block(nn.Module):
    """One transformer block: self-attention, optional cross-attention, MLP,
    each wrapped in a residual connection and a layer norm.

    ``pre_norm=True`` (GPT-2, most modern models): ``x = x + f(ln(x))``.
    ``pre_norm=False`` (BERT, the 2017 paper): ``x = ln(x + f(x))``.
    """

    def __init__(self, config: TransformerConfig, pre_norm: bool = True, cross: bool = False) -> None:
        super().__init__()
        C = config.n_embd
        self.pre_norm = pre_norm
        attention = dict(n_kv_head=config.n_kv_head, qkv_bias=config.qkv_bias, head_dim=config.head_dim,
                         scale=None if config.scale_scores else 1.0)
        self.ln_1 = _norm(config)
        self.attn = MultiHeadAttention(C, config.n_head, config.dropout, config.bias, **attention)
        self.cross_attn = (MultiHeadAttention(C, config.n_head, config.dropout, config.bias, cross=True, **attention)
                           if cross else None)
        self.ln_cross = _norm(config) if cross else None
        self.ln_2 = _norm(config)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        need_weights: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: ``(B, T, C)`` -> ``(B, T, C)``, plus self-attention weights
        ``(B, n_head, T, T_k)`` when ``need_weights``. ``rope``: rotary tables
        ``(cos, sin)`` of ``x``'s positions, each ``(T, head_dim)``; ``bias``: a
        float ``(1, n_head, T, T_k)`` added to the self-attention scores (T5)."""
        x, weights = self._residual(x, self.ln_1, self.attn, mask=mask, is_causal=is_causal, cache=cache,
                                    need_weights=need_weights, rope=rope, bias=bias)
        if self.cross_attn is not None:
            x, _ = self._residual(x, self.ln_cross, self.cross_attn, context=context, mask=context_mask,
                                  cache=cross_cache)
        x, _ = self._residual(x, self.ln_2, self.mlp)
        return x, weights

    def _residual(self, x: torch.Tensor, norm: nn.Module, sublayer: nn.Module,
                  **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One sub-layer in its residual connection: ``x + sublayer(norm(x))``
        (pre-norm) or ``norm(x + sublayer(x))`` (post-norm), ``(B, T, C)`` -> ``(B, T, C)``.
        Attention returns ``(y, weights)``; the weights are passed on (the MLP has none)."""
        out = sublayer(norm(x) if self.pre_norm else x, **kwargs)
        y, weights = out if isinstance(out, tuple) else (out, None)
        return (x + y if self.pre_norm else norm(x + y)), weights


# ----------------------------------------------------------------------------- shared helpers


def _init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2 initialisation: N(0, 0.02) for matrices and embeddings, zero biases,
    and residual output projections scaled down by 1/sqrt(2 * n_layer)."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
            nn.init.normal_(p, mean=0.0, std=std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)


INIT_SCHEMES = ("gpt2", "lecun")


def init_weights(model: nn.Module, scheme: str = "gpt2") -> nn.Module:
    """Draw every parameter of ``model`` afresh, in place, and return ``model``.

    ``scheme="gpt2"`` is what each model of this module gets when it is built
    (Radford et al., 2019): N(0, 0.02) for embeddings and weight matrices,
    residual output projections (``c_proj``) at 0.02 / sqrt(2 * layers), zero
    biases, LayerNorm gains 1. ``scheme="lecun"`` (LeCun et al., 1998) keeps
    the scale of the signal instead: embeddings N(0, 1) (PyTorch's default for
    ``nn.Embedding``), each ``nn.Linear`` weight N(0, 1 / in_features), zero
    biases, LayerNorm gains 1. A weight tied to an embedding (the LM head) is
    drawn once, as the embedding. Draws come from the global torch generator,
    so ``torch.manual_seed`` makes them reproducible.

    Why two: on small synthetic tasks the scale of the start can decide whether
    a circuit forms at all; chapter 2 measures this on key-value recall.
    """
    check_one_of("scheme", scheme, INIT_SCHEMES)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    with torch.no_grad():
        if scheme == "gpt2":
            n_layer = sum(1 for m in model.modules() if isinstance(m, Block))
            _init_weights(model, max(n_layer, 1))
            for m in model.modules():
                if isinstance(m, (nn.LayerNorm, RMSNorm)):
                    m.reset_parameters()
            return model
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        for m in model.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=1.0)
            elif isinstance(m, nn.Linear):
                if id(m.weight) not in embeddings:  # a tied head is drawn as its embedding
                    nn.init.normal_(m.weight, mean=0.0, std=m.in_features ** -0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, RMSNorm)):
                m.reset_parameters()
    return model


def _check_ids(input_ids: torch.Tensor, config: TransformerConfig, name: str = "input_ids", past: int = 0) -> None:
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must have shape (B, T), got {tuple(input_ids.shape)}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an integer tensor (torch.long), got {input_ids.dtype}")
    T = input_ids.shape[1]
    if T == 0:
        raise ValueError(f"{name} must hold at least one token, got shape {tuple(input_ids.shape)}")
    if past + T > config.block_size:
        raise ValueError(
            f"{name} has {past + T} positions{f' (including {past} cached)' if past else ''}, "
            f"more than the context window block_size={config.block_size}"
        )
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= config.vocab_size:
        raise ValueError(f"{name} must be in [0, {config.vocab_size}), got values from {lo} to {hi}")


def _check_labels(labels: torch.Tensor, like: torch.Tensor) -> None:
    if labels.shape != like.shape:
        raise ValueError(f"labels must have the shape of input_ids {tuple(like.shape)}, got {tuple(labels.shape)}")


def _check_attention_mask(attention_mask: torch.Tensor, B: int, T: int, name: str = "attention_mask") -> None:
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != (B, T):
        raise ValueError(f"{name} must have shape ({B}, {T}), got {tuple(attention_mask.shape)}")


def _lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not -100.
    ``logits``: ``(B, T, V)``; ``labels``: ``(B, T)``."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def _next_token_labels(labels: torch.Tensor) -> torch.Tensor:
    """``(B, T) -> (B, T)``: position t's target is token t + 1; the last position has none (-100).
    Shifting the labels rather than the logits (``logits[:, :-1]``) leaves the ``(B, T, V)`` logits
    uncopied: at a 49k vocabulary that copy and its gradient are hundreds of MB per step."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


class _LanguageModel(nn.Module):
    """What the three models share: parameter counts and a summary."""

    config: TransformerConfig

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameters, each counted once (tied weights are shared). With
        ``non_embedding=True`` the position embeddings are left out, as in GPT-2's paper."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(m.weight.numel() for name, m in self.named_modules() if name.endswith("wpe"))
        return n

    def summary(self) -> str:
        """A table of the model's parts and their parameter counts."""
        rows = [("part", "shape / count", "parameters")]
        seen: set[int] = set()
        for name, child in self.named_children():
            params = [p for p in child.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            n = sum(p.numel() for p in params)
            if isinstance(child, nn.ModuleList):
                desc = f"{len(child)} x {type(child[0]).__name__}" if len(child) else "empty"
            elif isinstance(child, nn.Embedding):
                desc = f"{child.num_embeddings} x {child.embedding_dim}"
            elif isinstance(child, nn.Linear):
                desc = f"{child.in_features} -> {child.out_features}" + (" (tied)" if n == 0 and child.bias is None else "")
            else:
                desc = type(child).__name__
            rows.append((name, desc, f"{n:,}"))
        rows.append(("total", "", f"{self.num_parameters():,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.config.to_dict().items())})"]
        for i, r in enumerate(rows):
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}")
            if i == 0 or i == len(rows) - 2:
                lines.append("-" * (sum(widths) + 4))
        return "\n".join(lines)

    def _encoder_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Check an encoder's input ``(B, T)`` and turn its padding ``attention_mask``
        ``(B, T)`` into a bidirectional attention mask ``(B, 1, T, T)``; ``None``: nothing to hide."""
        _check_ids(input_ids, self.config)
        if attention_mask is None:
            return None
        B, T = input_ids.shape
        _check_attention_mask(attention_mask, B, T)
        return make_attention_mask(T, T, False, attention_mask, input_ids.device)

    def _new_caches(self, n: int, batch_size: int, device: torch.device) -> list[KVCache]:
        c = self.config
        dtype = next(self.parameters()).dtype
        return [KVCache(batch_size, c.kv_heads, c.block_size, c.head_dim, device=device, dtype=dtype)
                for _ in range(n)]


# ----------------------------------------------------------------------------- decoder-only (GPT)


class DecoderOnlyLM(_LanguageModel):
    """A GPT-style causal language model: predicts token ``t+1`` from tokens ``0..t``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        check_one_of("DecoderOnlyLM's position", config.position, ("learned", "rope"))
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        if config.position == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned position embedding
        else:  # rotary: no table of vectors; queries and keys are turned by an angle that grows with position
            cos, sin = rotary_cos_sin(torch.arange(config.block_size), config.head_dim, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, head_dim)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, pre_norm=True) for _ in range(config.n_layer))
        self.ln_f = _norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        _init_weights(self, config.n_layer)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf, 2017)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits.

        Args:
            input_ids: ``(B, T)`` token ids.
            labels: ``(B, T)``, normally ``input_ids`` itself: position ``t`` is
                scored on predicting ``labels[:, t + 1]``; -100 is skipped.
            attention_mask: ``(B, T_past + T)``, 1 for real tokens and 0 for
                padding (pad on the right: positions are counted from 0).
            caches: one :class:`KVCache` per block, used by :meth:`generate`.
            need_weights: keep each block's attention weights in
                ``self.last_attention`` (a list of ``(B, n_head, T, T_k)``).

        Returns:
            ``(logits, loss)``: logits ``(B, T, vocab_size)``, loss a scalar or ``None``.
        """
        past = caches[0].length if caches else 0
        if past == 0 or not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            _check_ids(input_ids, self.config, past=past)
        elif past + input_ids.shape[1] > self.config.block_size:
            _check_ids(input_ids, self.config, past=past)
        B, T = input_ids.shape
        if attention_mask is not None:
            _check_attention_mask(attention_mask, B, past + T)
            mask, is_causal = make_attention_mask(T, past + T, True, attention_mask, input_ids.device), False
        elif past == 0:
            mask, is_causal = None, True  # the fused causal kernel
        else:
            mask, is_causal = make_attention_mask(T, past + T, True, None, input_ids.device), False
        x = self.wte(input_ids)  # (B, T, C)
        rope = None
        if self.config.position == "learned":
            x = x + self.wpe(torch.arange(past, past + T, device=input_ids.device))  # + (T, C)
        else:
            rope = self.rope_cos[past:past + T], self.rope_sin[past:past + T]  # (T, head_dim) each
        x = self.drop(x)
        self.last_attention = []
        for i, block in enumerate(self.blocks):
            x, w = block(x, mask=mask, is_causal=is_causal, cache=caches[i] if caches else None,
                         need_weights=need_weights, rope=rope)
            if need_weights:
                self.last_attention.append(w)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None
        if labels is not None:
            _check_labels(labels, input_ids)
            loss = _lm_loss(logits, _next_token_labels(labels))  # position t predicts token t + 1
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every block: a list of ``n_layer`` tensors ``(B, n_head, T, T)``."""
        self.forward(input_ids, need_weights=True)
        return self.last_attention

    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``input_ids`` ``(B, T)`` by up to ``max_new_tokens`` tokens.

        Greedy by default; with ``do_sample=True`` the next token is drawn after
        temperature, top-k and top-p, in that order (see :mod:`course_utils.sampling`;
        unlike Hugging Face, ``top_k=None`` means no top-k).
        A sequence that produced ``eos_token_id`` is padded with ``pad_token_id``
        afterwards; generation stops early when every sequence has finished.

        The prompt must fit in the context window (``T <= block_size``).
        Past the window the model sees only the last ``block_size`` tokens (a
        sliding window); each step then recomputes that window without the
        cache, so generation slows down there.

        Returns ``(B, T + n)`` ids, prompt included, with ``n <= max_new_tokens``.
        """
        _check_ids(input_ids, self.config)
        n_ctx = self.config.block_size
        # inference_mode skips autograd's bookkeeping on every small op of every step
        with evaluating(self), torch.inference_mode():
            caches = self._new_caches(len(self.blocks), input_ids.shape[0], input_ids.device) if use_cache else None

            def next_logits(ids: torch.Tensor) -> torch.Tensor:
                """All ids so far ``(B, t)`` -> logits of the next token ``(B, V)``."""
                if caches is not None and ids.shape[1] <= n_ctx:
                    return self(ids[:, caches[0].length:], caches=caches)[0][:, -1]  # only what is not cached
                return self(ids[:, -n_ctx:])[0][:, -1]  # no cache, or past the window: the last n_ctx ids

            out = decoding_loop(next_logits, input_ids, max_new_tokens, do_sample, temperature, top_k, top_p,
                                eos_token_id, self.config.pad_token_id, generator)
        return out.clone()  # made outside inference_mode: an ordinary tensor, usable for training

    @classmethod
    def from_hf(cls, hf_model) -> "DecoderOnlyLM":
        """Copy a ``transformers`` causal LM into a :class:`DecoderOnlyLM`:
        ``GPT2LMHeadModel``, ``LlamaForCausalLM`` (e.g. SmolLM2) or ``Qwen2ForCausalLM``.

        GPT-2 stores its projections as ``Conv1D`` with weights of shape
        ``(in, out)``; ``nn.Linear`` keeps ``(out, in)``, so they are transposed.
        Llama and Qwen2 keep separate q, k, v projections, which are
        concatenated into the fused ``c_attn`` (see :meth:`_from_hf_llama`).
        """
        hc = hf_model.config
        if hc.model_type in ("llama", "qwen2"):
            return cls._from_hf_llama(hf_model)
        if hc.model_type != "gpt2":
            raise ValueError(f"DecoderOnlyLM.from_hf loads gpt2, llama and qwen2 models, got {hc.model_type!r}")
        unsupported = [k for k in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn") if getattr(hc, k, False)]
        if not getattr(hc, "scale_attn_weights", True):
            unsupported.append("scale_attn_weights=False")
        if unsupported:
            raise ValueError(f"GPT-2 options not supported by DecoderOnlyLM: {unsupported}")
        act = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}.get(hc.activation_function)
        if act is None:
            raise ValueError(f"activation_function must be gelu_new or gelu, got {hc.activation_function!r}")
        config = TransformerConfig(
            vocab_size=hc.vocab_size, block_size=hc.n_positions, n_layer=hc.n_layer, n_head=hc.n_head,
            n_embd=hc.n_embd, n_inner=hc.n_inner, layer_norm_eps=hc.layer_norm_epsilon, activation=act,
            pad_token_id=hc.pad_token_id if hc.pad_token_id is not None and hc.pad_token_id < hc.vocab_size else 0,
        )
        model = cls(config)
        src = hf_model.transformer
        with torch.no_grad():
            model.wte.weight.copy_(src.wte.weight)
            model.wpe.weight.copy_(src.wpe.weight)
            for ours, theirs in zip(model.blocks, src.h):
                for a, b in ((ours.ln_1, theirs.ln_1), (ours.ln_2, theirs.ln_2)):
                    a.weight.copy_(b.weight)
                    a.bias.copy_(b.bias)
                for a, b in ((ours.attn.c_attn, theirs.attn.c_attn), (ours.attn.c_proj, theirs.attn.c_proj),
                             (ours.mlp.c_fc, theirs.mlp.c_fc), (ours.mlp.c_proj, theirs.mlp.c_proj)):
                    a.weight.copy_(b.weight.t())  # Conv1D (in, out) -> Linear (out, in)
                    a.bias.copy_(b.bias)
            model.ln_f.weight.copy_(src.ln_f.weight)
            model.ln_f.bias.copy_(src.ln_f.bias)
        return model


    @classmethod
    def _from_hf_llama(cls, hf_model) -> "DecoderOnlyLM":
        """Llama and Qwen2: RMSNorm, rotary positions, a SwiGLU MLP, grouped-query
        attention and an optionally untied head; Qwen2 adds biases to q, k and v.

        Hugging Face's q and k weights are laid out for the halves convention
        of rotary embeddings (pairs ``i`` and ``i + head_dim / 2``), the one
        :func:`course_utils.attention.apply_rotary` uses, so they copy as they are.
        """
        hc = hf_model.config
        rope = dict(getattr(hc, "rope_parameters", None) or getattr(hc, "rope_scaling", None) or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        theta = rope.get("rope_theta", getattr(hc, "rope_theta", None))
        head_dim = getattr(hc, "head_dim", None) or hc.hidden_size // hc.num_attention_heads
        unsupported = []
        if rope_type != "default":
            unsupported.append(f"rope_type={rope_type!r} (only unscaled rotary embeddings)")
        if head_dim * hc.num_attention_heads != hc.hidden_size:
            unsupported.append(f"head_dim={head_dim} with hidden_size={hc.hidden_size}")
        if hc.hidden_act != "silu":
            unsupported.append(f"hidden_act={hc.hidden_act!r}")
        if getattr(hc, "use_sliding_window", False):
            unsupported.append("use_sliding_window=True")
        if getattr(hc, "attention_bias", False) or getattr(hc, "mlp_bias", False):
            unsupported.append("attention_bias or mlp_bias")
        if unsupported:
            raise ValueError(f"{hc.model_type} options not supported by DecoderOnlyLM: {unsupported}")
        pad = hc.pad_token_id if hc.pad_token_id is not None and 0 <= hc.pad_token_id < hc.vocab_size else 0
        config = TransformerConfig(
            vocab_size=hc.vocab_size, block_size=hc.max_position_embeddings, n_layer=hc.num_hidden_layers,
            n_head=hc.num_attention_heads, n_embd=hc.hidden_size, n_inner=hc.intermediate_size, bias=False,
            layer_norm_eps=hc.rms_norm_eps, activation="silu", pad_token_id=pad, norm="rmsnorm",
            position="rope", rope_theta=float(theta), mlp="gated", n_kv_head=hc.num_key_value_heads,
            tie_embeddings=bool(hc.tie_word_embeddings), qkv_bias=hc.model_type == "qwen2",
        )
        model = cls(config)
        src = hf_model.model
        with torch.no_grad():
            model.wte.weight.copy_(src.embed_tokens.weight)
            for ours, theirs in zip(model.blocks, src.layers):
                a = theirs.self_attn
                ours.attn.c_attn.weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
                if config.qkv_bias:
                    ours.attn.c_attn.bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
                ours.attn.c_proj.weight.copy_(a.o_proj.weight)
                ours.mlp.c_gate.weight.copy_(theirs.mlp.gate_proj.weight)
                ours.mlp.c_fc.weight.copy_(theirs.mlp.up_proj.weight)
                ours.mlp.c_proj.weight.copy_(theirs.mlp.down_proj.weight)
                ours.ln_1.weight.copy_(theirs.input_layernorm.weight)
                ours.ln_2.weight.copy_(theirs.post_attention_layernorm.weight)
            model.ln_f.weight.copy_(src.norm.weight)
            if not config.tie_embeddings:
                model.lm_head.weight.copy_(hf_model.lm_head.weight)
        return model


    def to_hf(self):
        """This model as a ``transformers`` model with the same weights and logits:
        a ``GPT2LMHeadModel`` for the GPT-2 layout (the default config), a
        ``LlamaForCausalLM`` for the Llama layout (RMSNorm, rotary positions, a
        SwiGLU MLP, no biases) and a ``Qwen2ForCausalLM`` when q, k and v have
        biases. Other combinations of options have no ``transformers`` class and
        raise ``ValueError``. The result is in eval mode, on the CPU, in fp32."""
        c = self.config
        gpt2 = (c.position, c.norm, c.mlp) == ("learned", "layernorm", "plain") and c.bias and c.tie_embeddings \
            and c.kv_heads == c.n_head and c.qkv_bias in (None, True) and c.activation in ("gelu", "gelu_tanh") \
            and c.head_size in (None, c.n_embd // c.n_head) and c.scale_scores
        llama = (c.position, c.norm, c.mlp, c.activation) == ("rope", "rmsnorm", "gated", "silu") and not c.bias \
            and c.head_size in (None, c.n_embd // c.n_head) and c.scale_scores
        state = {k: v.detach().float().cpu() for k, v in self.state_dict().items()}
        if gpt2:
            return self._to_hf_gpt2(state)
        if llama:
            return self._to_hf_llama(state)
        raise ValueError("to_hf exports the GPT-2 layout or the Llama/Qwen2 layout (position='rope', norm='rmsnorm', "
                         f"mlp='gated', activation='silu', bias=False); this config is neither: {c}")

    def _to_hf_gpt2(self, state: dict):
        from transformers import GPT2Config, GPT2LMHeadModel

        c = self.config
        hc = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                        n_head=c.n_head, n_inner=c.n_inner, layer_norm_epsilon=c.layer_norm_eps,
                        activation_function="gelu_new" if c.activation == "gelu_tanh" else "gelu",
                        resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
                        pad_token_id=c.pad_token_id, bos_token_id=None, eos_token_id=None)
        hf = GPT2LMHeadModel(hc)
        sd = {"transformer.wte.weight": state["wte.weight"], "transformer.wpe.weight": state["wpe.weight"],
              "transformer.ln_f.weight": state["ln_f.weight"], "transformer.ln_f.bias": state["ln_f.bias"]}
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
            for a, b in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
                sd[theirs + b + ".weight"], sd[theirs + b + ".bias"] = state[ours + a + ".weight"], state[ours + a + ".bias"]
            for a, b in (("attn.c_attn", "attn.c_attn"), ("attn.c_proj", "attn.c_proj"), ("mlp.c_fc", "mlp.c_fc"),
                         ("mlp.c_proj", "mlp.c_proj")):
                sd[theirs + b + ".weight"] = state[ours + a + ".weight"].t().contiguous()  # Linear -> Conv1D
                sd[theirs + b + ".bias"] = state[ours + a + ".bias"]
        return self._load_into(hf, sd)

    def _to_hf_llama(self, state: dict):
        from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

        c = self.config
        qwen = bool(c.qkv_bias)
        common = dict(vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.inner,
                      num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.kv_heads,
                      max_position_embeddings=c.block_size, rms_norm_eps=c.layer_norm_eps, hidden_act="silu",
                      tie_word_embeddings=c.tie_embeddings, pad_token_id=c.pad_token_id, bos_token_id=None,
                      eos_token_id=None, attention_dropout=c.dropout)
        config_cls = Qwen2Config if qwen else LlamaConfig
        if hasattr(config_cls(), "rope_parameters"):  # transformers 5
            common["rope_parameters"] = {"rope_type": "default", "rope_theta": c.rope_theta}
        else:
            common["rope_theta"] = c.rope_theta
        hf = (Qwen2ForCausalLM if qwen else LlamaForCausalLM)(config_cls(**common))
        q_w, kv_w = c.n_head * c.head_dim, c.kv_heads * c.head_dim
        sd = {"model.embed_tokens.weight": state["wte.weight"], "model.norm.weight": state["ln_f.weight"],
              "lm_head.weight": state["lm_head.weight"]}
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
            q, k, v = state[ours + "attn.c_attn.weight"].split([q_w, kv_w, kv_w])
            sd.update({theirs + "self_attn.q_proj.weight": q, theirs + "self_attn.k_proj.weight": k,
                       theirs + "self_attn.v_proj.weight": v,
                       theirs + "self_attn.o_proj.weight": state[ours + "attn.c_proj.weight"],
                       theirs + "mlp.gate_proj.weight": state[ours + "mlp.c_gate.weight"],
                       theirs + "mlp.up_proj.weight": state[ours + "mlp.c_fc.weight"],
                       theirs + "mlp.down_proj.weight": state[ours + "mlp.c_proj.weight"],
                       theirs + "input_layernorm.weight": state[ours + "ln_1.weight"],
                       theirs + "post_attention_layernorm.weight": state[ours + "ln_2.weight"]})
            if qwen:
                qb, kb, vb = state[ours + "attn.c_attn.bias"].split([q_w, kv_w, kv_w])
                sd.update({theirs + "self_attn.q_proj.bias": qb, theirs + "self_attn.k_proj.bias": kb,
                           theirs + "self_attn.v_proj.bias": vb})
        return self._load_into(hf, sd)

    @staticmethod
    def _load_into(hf, sd: dict):
        """Load ``sd`` into ``hf``; every parameter must be set (tied ones once), nothing left over."""
        missing, unexpected = hf.load_state_dict(sd, strict=False)
        tied = {"lm_head.weight"} if hf.get_output_embeddings().weight is hf.get_input_embeddings().weight else set()
        missing = [k for k in missing if k not in tied and not k.endswith((".attn.bias", ".attn.masked_bias"))]
        if missing or unexpected:
            raise RuntimeError(f"export incomplete: missing {missing}, unexpected {unexpected}")
        return hf.eval()


# ----------------------------------------------------------------------------- encoder-only (BERT)


class EncoderOnlyLM(_LanguageModel):
    """A BERT-style masked language model: every position sees the whole
    sequence, and the model predicts the tokens that were masked out."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        check_one_of("EncoderOnlyLM's position", config.position, ("learned",))
        C, eps = config.n_embd, config.layer_norm_eps
        self.wte = nn.Embedding(config.vocab_size, C)
        self.wpe = nn.Embedding(config.block_size, C)
        self.ln_emb = nn.LayerNorm(C, eps=eps, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, pre_norm=False) for _ in range(config.n_layer))
        # masked-LM head: transform, then a decoder tied to the token embedding
        self.head_dense = nn.Linear(C, C, bias=config.bias)
        self.head_act = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.head_ln = nn.LayerNorm(C, eps=eps, bias=config.bias)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=True)
        _init_weights(self, config.n_layer)
        self.lm_head.weight = self.wte.weight

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               need_weights: bool = False) -> torch.Tensor:
        """Contextual embeddings ``(B, T, C)`` of ``input_ids`` ``(B, T)``."""
        mask = self._encoder_mask(input_ids, attention_mask)  # None, or (B, 1, T, T) hiding padding
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.drop(self.ln_emb(self.wte(input_ids) + self.wpe(pos)))  # (B, T, C)
        self.last_attention = []
        for block in self.blocks:
            x, w = block(x, mask=mask, need_weights=need_weights)
            if need_weights:
                self.last_attention.append(w)
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Masked-LM logits ``(B, T, vocab_size)`` and, given ``labels`` ``(B, T)``
        (the original ids at masked positions, -100 elsewhere), their loss."""
        x = self.encode(input_ids, attention_mask)
        logits = self.lm_head(self.head_ln(self.head_act(self.head_dense(x))))  # (B, T, V)
        loss = None
        if labels is not None:
            _check_labels(labels, input_ids)
            loss = _lm_loss(logits, labels)
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Attention weights of every block: a list of ``n_layer`` tensors ``(B, n_head, T, T)``."""
        self.encode(input_ids, attention_mask, need_weights=True)
        return self.last_attention

    @classmethod
    def from_hf(cls, hf_model) -> "EncoderOnlyLM":
        """Copy a ``transformers.BertForMaskedLM`` into an :class:`EncoderOnlyLM`.

        BERT's three attention projections are concatenated into the fused
        ``c_attn``. BERT also adds a token-type (segment) embedding; with every
        token in segment 0 that is one constant vector, which is folded into
        the position embedding (exactly equal results for single-segment input).
        """
        hc = hf_model.config
        if getattr(hc, "position_embedding_type", "absolute") not in (None, "absolute"):
            raise ValueError(f"position_embedding_type must be 'absolute', got {hc.position_embedding_type!r}")
        act = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}.get(hc.hidden_act)
        if act is None:
            raise ValueError(f"hidden_act must be gelu or gelu_new, got {hc.hidden_act!r}")
        config = TransformerConfig(
            vocab_size=hc.vocab_size, block_size=hc.max_position_embeddings, n_layer=hc.num_hidden_layers,
            n_head=hc.num_attention_heads, n_embd=hc.hidden_size, n_inner=hc.intermediate_size,
            layer_norm_eps=hc.layer_norm_eps, activation=act,
            pad_token_id=hc.pad_token_id if hc.pad_token_id is not None else 0,
        )
        model = cls(config)
        emb, layers, head = hf_model.bert.embeddings, hf_model.bert.encoder.layer, hf_model.cls.predictions

        def copy_ln(a: nn.LayerNorm, b: nn.LayerNorm) -> None:
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)

        with torch.no_grad():
            model.wte.weight.copy_(emb.word_embeddings.weight)
            model.wpe.weight.copy_(emb.position_embeddings.weight + emb.token_type_embeddings.weight[0])
            copy_ln(model.ln_emb, emb.LayerNorm)
            for ours, theirs in zip(model.blocks, layers):
                s = theirs.attention.self
                ours.attn.c_attn.weight.copy_(torch.cat([s.query.weight, s.key.weight, s.value.weight], dim=0))
                ours.attn.c_attn.bias.copy_(torch.cat([s.query.bias, s.key.bias, s.value.bias], dim=0))
                ours.attn.c_proj.weight.copy_(theirs.attention.output.dense.weight)
                ours.attn.c_proj.bias.copy_(theirs.attention.output.dense.bias)
                copy_ln(ours.ln_1, theirs.attention.output.LayerNorm)
                ours.mlp.c_fc.weight.copy_(theirs.intermediate.dense.weight)
                ours.mlp.c_fc.bias.copy_(theirs.intermediate.dense.bias)
                ours.mlp.c_proj.weight.copy_(theirs.output.dense.weight)
                ours.mlp.c_proj.bias.copy_(theirs.output.dense.bias)
                copy_ln(ours.ln_2, theirs.output.LayerNorm)
            model.head_dense.weight.copy_(head.transform.dense.weight)
            model.head_dense.bias.copy_(head.transform.dense.bias)
            copy_ln(model.head_ln, head.transform.LayerNorm)
            model.lm_head.bias.copy_(head.bias)
        return model


    def to_hf(self):
        """This model as a ``transformers.BertForMaskedLM`` with the same weights and
        logits (single-segment input: the token-type embedding is zero, since ours
        is folded into the position embedding). In eval mode, on the CPU, in fp32."""
        from transformers import BertConfig, BertForMaskedLM

        c = self.config
        if (c.norm, c.mlp) != ("layernorm", "plain") or not c.bias or c.kv_heads != c.n_head \
                or c.head_size not in (None, c.n_embd // c.n_head) or c.activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"to_hf exports the BERT layout (LayerNorm, plain GELU MLP, biases); got {c}")
        state = {k: v.detach().float().cpu() for k, v in self.state_dict().items()}
        hc = BertConfig(vocab_size=c.vocab_size, hidden_size=c.n_embd, num_hidden_layers=c.n_layer,
                        num_attention_heads=c.n_head, intermediate_size=c.inner,
                        hidden_act="gelu" if c.activation == "gelu" else "gelu_new",
                        hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout,
                        max_position_embeddings=c.block_size, layer_norm_eps=c.layer_norm_eps,
                        pad_token_id=c.pad_token_id, type_vocab_size=1)
        hf = BertForMaskedLM(hc)
        C = c.n_embd
        sd = {"bert.embeddings.word_embeddings.weight": state["wte.weight"],
              "bert.embeddings.position_embeddings.weight": state["wpe.weight"],
              "bert.embeddings.token_type_embeddings.weight": torch.zeros(1, C),
              "bert.embeddings.LayerNorm.weight": state["ln_emb.weight"],
              "bert.embeddings.LayerNorm.bias": state["ln_emb.bias"],
              "cls.predictions.transform.dense.weight": state["head_dense.weight"],
              "cls.predictions.transform.dense.bias": state["head_dense.bias"],
              "cls.predictions.transform.LayerNorm.weight": state["head_ln.weight"],
              "cls.predictions.transform.LayerNorm.bias": state["head_ln.bias"],
              "cls.predictions.bias": state["lm_head.bias"], "cls.predictions.decoder.bias": state["lm_head.bias"]}
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"bert.encoder.layer.{i}."
            for name, w in zip(("query", "key", "value"), state[ours + "attn.c_attn.weight"].split(C)):
                sd[theirs + f"attention.self.{name}.weight"] = w
            for name, b in zip(("query", "key", "value"), state[ours + "attn.c_attn.bias"].split(C)):
                sd[theirs + f"attention.self.{name}.bias"] = b
            for a, b in (("attn.c_proj", "attention.output.dense"), ("ln_1", "attention.output.LayerNorm"),
                         ("mlp.c_fc", "intermediate.dense"), ("mlp.c_proj", "output.dense"),
                         ("ln_2", "output.LayerNorm")):
                sd[theirs + b + ".weight"], sd[theirs + b + ".bias"] = state[ours + a + ".weight"], state[ours + a + ".bias"]
        missing, unexpected = hf.load_state_dict(sd, strict=False)
        missing = [k for k in missing if k not in ("cls.predictions.decoder.weight", "bert.embeddings.position_ids",
                                                   "bert.embeddings.token_type_ids")]
        unexpected = [k for k in unexpected if k != "cls.predictions.decoder.bias"]
        if missing or unexpected:
            raise RuntimeError(f"export incomplete: missing {missing}, unexpected {unexpected}")
        return hf.eval()


# ----------------------------------------------------------------------------- encoder-decoder (T5-style)


class EncoderDecoderLM(_LanguageModel):
    """An encoder-decoder (sequence-to-sequence) model: the encoder reads the
    input bidirectionally, the decoder writes the output causally and looks at
    the encoder through cross-attention. Trained with span corruption, as T5."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        C, eps = config.n_embd, config.layer_norm_eps
        check_one_of("EncoderDecoderLM's position", config.position, ("learned", "relative"))
        n_dec = config.n_decoder_layer or config.n_layer
        self.wte = nn.Embedding(config.vocab_size, C)  # shared by encoder, decoder and output
        if config.position == "learned":
            self.enc_wpe = nn.Embedding(config.block_size, C)
            self.dec_wpe = nn.Embedding(config.block_size, C)
        else:  # T5: one table of relative-distance biases per stack, shared by its blocks
            rel = dict(num_buckets=config.relative_buckets, max_distance=config.relative_max_distance)
            self.enc_rel = RelativePositionBias(config.n_head, bidirectional=True, **rel)
            self.dec_rel = RelativePositionBias(config.n_head, bidirectional=False, **rel)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(Block(config, pre_norm=True) for _ in range(config.n_layer))
        self.ln_enc = _norm(config)
        self.decoder = nn.ModuleList(Block(config, pre_norm=True, cross=True) for _ in range(n_dec))
        self.ln_f = _norm(config)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        _init_weights(self, config.n_layer + n_dec)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.config.position == "learned":
            n -= self.enc_wpe.weight.numel() + self.dec_wpe.weight.numel()
        return n

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output ``(B, S, C)`` for source ids ``(B, S)``."""
        mask = self._encoder_mask(input_ids, attention_mask)  # None, or (B, 1, S, S) hiding padding
        S = input_ids.shape[1]
        x, bias = self.wte(input_ids), None  # (B, S, C)
        if self.config.position == "learned":
            x = x + self.enc_wpe(torch.arange(S, device=input_ids.device))  # + (S, C)
        else:
            bias = self.enc_rel(S, S)  # (1, n_head, S, S), the same for every block
        x = self.drop(x)
        for block in self.encoder:
            x, _ = block(x, mask=mask, bias=bias)
        return self.ln_enc(x)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        cross_caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """Decoder logits ``(B, T, V)`` for target ids ``(B, T)`` given the encoder
        output ``memory`` ``(B, S, C)`` and its padding ``attention_mask`` ``(B, S)``."""
        past = caches[0].length if caches else 0
        _check_ids(decoder_input_ids, self.config, "decoder_input_ids", past=past)
        B, T = decoder_input_ids.shape
        context_mask = None
        if attention_mask is not None:
            _check_attention_mask(attention_mask, B, memory.shape[1])
            context_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S): the same for every query
        mask = None if past == 0 else make_attention_mask(T, past + T, True, None, decoder_input_ids.device)
        x, bias = self.wte(decoder_input_ids), None  # (B, T, C)
        if self.config.position == "learned":
            x = x + self.dec_wpe(torch.arange(past, past + T, device=decoder_input_ids.device))
        else:
            bias = self.dec_rel(T, past + T, past=past)  # (1, n_head, T, past + T)
        x = self.drop(x)
        for i, block in enumerate(self.decoder):
            x, _ = block(x, mask=mask, is_causal=past == 0, context=memory, context_mask=context_mask,
                         cache=caches[i] if caches else None, cross_cache=cross_caches[i] if cross_caches else None,
                         bias=bias)
        x = self.ln_f(x)
        if self.config.scale_head_input:
            x = x * self.config.n_embd ** -0.5  # T5: keeps the tied head's logits at the scale of its init
        return self.lm_head(x)  # (B, T, V)

    @classmethod
    def from_hf(cls, hf_model) -> "EncoderDecoderLM":
        """Copy a ``transformers.T5ForConditionalGeneration`` (T5, T5 v1.1, FLAN-T5)
        into an :class:`EncoderDecoderLM`.

        What T5 changes, each a named option of :class:`TransformerConfig`:
        ``norm="rmsnorm"`` and ``bias=False`` (no biases anywhere),
        ``position="relative"`` (bucketed relative-distance biases, one table per
        stack), ``scale_scores=False`` (no division by sqrt(head width)),
        ``head_size=d_kv`` (heads x d_kv need not equal d_model), the feed-forward
        ``mlp="plain", activation="relu"`` (T5) or ``mlp="gated",
        activation="gelu_tanh"`` (T5 v1.1 and FLAN-T5), and a head that is
        either tied with its input scaled by ``d_model ** -0.5`` (T5) or untied and
        unscaled (v1.1, FLAN-T5).
        """
        hc = hf_model.config
        if hc.model_type != "t5":
            raise ValueError(f"EncoderDecoderLM.from_hf loads t5 models, got {hc.model_type!r}")
        act = getattr(hc, "dense_act_fn", "relu")
        gated = bool(getattr(hc, "is_gated_act", False))
        activation = {"relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}.get(act)
        if activation is None:
            raise ValueError(f"feed_forward_proj {hc.feed_forward_proj!r} is not supported (relu or gated-gelu)")
        decoder_start = getattr(hc, "decoder_start_token_id", hc.pad_token_id)
        if decoder_start != hc.pad_token_id:
            raise ValueError(f"decoder_start_token_id must be the pad id ({hc.pad_token_id}), got {decoder_start}")
        config = TransformerConfig(
            vocab_size=hc.vocab_size, block_size=getattr(hc, "n_positions", None) or 512, n_layer=hc.num_layers,
            n_decoder_layer=hc.num_decoder_layers, n_head=hc.num_heads, n_embd=hc.d_model, n_inner=hc.d_ff,
            bias=False, layer_norm_eps=hc.layer_norm_epsilon, activation=activation, pad_token_id=hc.pad_token_id,
            norm="rmsnorm", position="relative", relative_buckets=hc.relative_attention_num_buckets,
            relative_max_distance=hc.relative_attention_max_distance, head_size=hc.d_kv, scale_scores=False,
            mlp="gated" if gated else "plain",
            # whether the head shares the embedding matrix: read from the weights themselves, since
            # transformers 5 ties T5's head always and keeps the v1.0/v1.1 difference in scale_decoder_outputs
            tie_embeddings=hf_model.lm_head.weight.data_ptr() == hf_model.shared.weight.data_ptr(),
            scale_head_input=bool(getattr(hc, "scale_decoder_outputs", hc.tie_word_embeddings)),
        )
        model = cls(config)

        def copy_attention(ours: MultiHeadAttention, theirs, cross: bool) -> None:
            if cross:
                ours.q_proj.weight.copy_(theirs.q.weight)
                ours.kv_proj.weight.copy_(torch.cat([theirs.k.weight, theirs.v.weight]))
            else:
                ours.c_attn.weight.copy_(torch.cat([theirs.q.weight, theirs.k.weight, theirs.v.weight]))
            ours.c_proj.weight.copy_(theirs.o.weight)

        def copy_mlp(ours: MLP, theirs) -> None:
            if gated:
                ours.c_gate.weight.copy_(theirs.wi_0.weight)  # passes through the activation
                ours.c_fc.weight.copy_(theirs.wi_1.weight)
            else:
                ours.c_fc.weight.copy_(theirs.wi.weight)
            ours.c_proj.weight.copy_(theirs.wo.weight)

        with torch.no_grad():
            model.wte.weight.copy_(hf_model.shared.weight)
            for ours, theirs in zip(model.encoder, hf_model.encoder.block):
                copy_attention(ours.attn, theirs.layer[0].SelfAttention, cross=False)
                ours.ln_1.weight.copy_(theirs.layer[0].layer_norm.weight)
                copy_mlp(ours.mlp, theirs.layer[1].DenseReluDense)
                ours.ln_2.weight.copy_(theirs.layer[1].layer_norm.weight)
            for ours, theirs in zip(model.decoder, hf_model.decoder.block):
                copy_attention(ours.attn, theirs.layer[0].SelfAttention, cross=False)
                ours.ln_1.weight.copy_(theirs.layer[0].layer_norm.weight)
                copy_attention(ours.cross_attn, theirs.layer[1].EncDecAttention, cross=True)
                ours.ln_cross.weight.copy_(theirs.layer[1].layer_norm.weight)
                copy_mlp(ours.mlp, theirs.layer[2].DenseReluDense)
                ours.ln_2.weight.copy_(theirs.layer[2].layer_norm.weight)
            # the relative biases live in each stack's first block
            model.enc_rel.relative_attention_bias.weight.copy_(
                hf_model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight)
            model.dec_rel.relative_attention_bias.weight.copy_(
                hf_model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight)
            model.ln_enc.weight.copy_(hf_model.encoder.final_layer_norm.weight)
            model.ln_f.weight.copy_(hf_model.decoder.final_layer_norm.weight)
            if not config.tie_embeddings:
                model.lm_head.weight.copy_(hf_model.lm_head.weight)
        return model

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs from labels: ``[start, y0, y1, ...]`` with the pad id as
        start token and -100 replaced by padding. ``(B, T) -> (B, T)``."""
        start = torch.full_like(labels[:, :1], self.config.pad_token_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == IGNORE_INDEX, self.config.pad_token_id)

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, V)`` of the target sequence and, given ``labels``
        ``(B, T)`` (-100 skipped), the loss. Without ``decoder_input_ids`` the
        decoder is fed ``labels`` shifted right (teacher forcing)."""
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("EncoderDecoderLM needs decoder_input_ids or labels (to shift right), got neither")
            decoder_input_ids = self.shift_right(labels)
        memory = self.encode(input_ids, attention_mask)
        logits = self.decode(decoder_input_ids, memory, attention_mask)
        loss = None
        if labels is not None:
            _check_labels(labels, decoder_input_ids)
            loss = _lm_loss(logits, labels)
        return logits, loss

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, attention_mask: torch.Tensor | None = None,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, eos_token_id: int | None = None, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode ``input_ids`` ``(B, S)`` once, then write up to ``max_new_tokens``
        tokens with the decoder, starting from the pad token (as T5 does).
        Settings as in :meth:`DecoderOnlyLM.generate`. Returns ``(B, 1 + n)``
        decoder ids, the start token first. The output may not exceed the
        context window: ``max_new_tokens < block_size``."""
        check_int("max_new_tokens", max_new_tokens, 0, self.config.block_size - 1,
                  hint=f"the decoder's output, start token included, must fit block_size={self.config.block_size}")
        B, device = input_ids.shape[0], input_ids.device
        with evaluating(self), torch.inference_mode():
            memory = self.encode(input_ids, attention_mask)  # (B, S, C), once for all steps
            n_dec = len(self.decoder)
            caches = self._new_caches(n_dec, B, device) if use_cache else None
            cross = self._new_caches(n_dec, B, device) if use_cache else None  # keys and values of memory

            def next_logits(ids: torch.Tensor) -> torch.Tensor:
                """All decoder ids so far ``(B, t)`` -> logits of the next token ``(B, V)``."""
                if caches is None:
                    return self.decode(ids, memory, attention_mask)[:, -1]
                return self.decode(ids[:, caches[0].length:], memory, attention_mask, caches, cross)[:, -1]

            start = torch.full((B, 1), self.config.pad_token_id, dtype=torch.long, device=device)
            out = decoding_loop(next_logits, start, max_new_tokens, do_sample, temperature, top_k, top_p,
                                eos_token_id, self.config.pad_token_id, generator)
        return out.clone()  # made outside inference_mode: an ordinary tensor
