"""Next-word prediction before transformers: n-gram counts and recurrent networks.

Two older answers to "predict the next token", kept small enough to read in
one sitting, and one experiment that shows where they fall short:

1. **N-gram models** (Jurafsky & Martin, *Speech and Language Processing*,
   3rd ed., chapter 3): count how often each token follows each context of
   ``n - 1`` tokens, add ``k`` to every count (add-k smoothing), divide.
   :func:`ngram_counts`, :class:`NGramLM`.
2. **Recurrent networks**: the Elman RNN (Elman, 1990, "Finding Structure in
   Time"), one step written out by hand in :func:`rnn_step`, and the LSTM
   (Hochreiter & Schmidhuber, 1997), both as language models (Mikolov et al.,
   2010, "Recurrent neural network based language model") in :class:`RNNLM`,
   built on ``torch.nn.RNN`` / ``torch.nn.LSTM``. The whole past is squeezed
   into a state of fixed size, so each new token costs the same, however long
   the text: :meth:`RNNLM.generate` carries that state from token to token.
3. **Associative recall** (Ba et al., 2016, "Using Fast Weights to Attend to
   the Recent Past"; Arora et al., 2023, "Zoology"): ``k1 v1 ... kn vn q`` ->
   the value of key ``q``. Attention looks the key up; a fixed-size state has to
   have stored every pair. Copying (Graves et al., 2014, "Neural Turing
   Machines"; Jelassi et al., 2024, "Repeat After Me") is recall by position:
   ``x1 .. xL SEP`` -> ``x1 .. xL``. :func:`associative_recall_experiment` trains
   an LSTM and a small transformer on either task for the same number of updates
   (so the outcome does not depend on the machine's speed) and compares them,
   reporting the seconds each took; :func:`plateau_exit_step` reads when a loss
   curve left its plateau; :func:`context_cost_table` shows the price attention
   pays for its memory.

``RNNLM`` follows the calling convention of :class:`course_utils.transformer.DecoderOnlyLM`
(Hugging Face names): ``logits, loss = model(input_ids, labels=None, attention_mask=None)``,
with ``labels`` aligned with ``input_ids``, shifted inside, ``-100`` ignored.

Why one file of this size: it is chapter 2 in code (n-grams, RNNs, LSTMs and
the experiment that compares them with attention), each part short; the
experiment needs the models it compares, and the training loop itself is
:func:`course_utils.training.train`.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from .checks import check_int, check_number, check_one_of
from .data.tasks import _check_recall_sizes, _copy_rows, _recall_rows
from .device import evaluating
from .sampling import decoding_loop
from .transformer import IGNORE_INDEX, _lm_loss, _next_token_labels

__all__ = [
    "ngram_counts",
    "NGramLM",
    "rnn_step",
    "RNNLM",
    "recall_batch",
    "recall_collate",
    "recall_accuracy",
    "copy_batch",
    "copy_accuracy",
    "RECALL_MODELS",
    "associative_recall_experiment",
    "plateau_exit_step",
    "context_cost_table",
]

CELLS = ("rnn", "lstm")


def _as_list(tokens: Any, name: str) -> list:
    if isinstance(tokens, torch.Tensor):
        if tokens.dim() != 1:
            raise ValueError(f"{name} must be a 1-D sequence of tokens, got a tensor of shape {tuple(tokens.shape)}")
        return tokens.tolist()
    if isinstance(tokens, (str, Sequence)):
        return list(tokens)
    raise TypeError(f"{name} must be a sequence of tokens (str, list, tuple or 1-D tensor), "
                    f"got {type(tokens).__name__}")


# ----------------------------------------------------------------------------- 1. n-gram models


def ngram_counts(tokens: Sequence[Hashable] | str | torch.Tensor, n: int) -> Counter:
    """How often each run of ``n`` consecutive tokens occurs: ``{(t_1, ..., t_n): count}``.

    Tokens can be characters (a string), words or ids. A sequence shorter than
    ``n`` has no n-grams. Example: ``ngram_counts("abab", 2)`` ->
    ``Counter({('a', 'b'): 2, ('b', 'a'): 1})``.
    """
    check_int("n", n, 1)
    toks = _as_list(tokens, "tokens")
    return Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))


class NGramLM:
    """An n-gram language model from counts, with add-k smoothing.

    The next token depends only on the ``n - 1`` tokens before it::

        P(w | c) = (count(c, w) + k) / (count(c) + k * V)

    where ``c`` is the context of ``n - 1`` tokens, ``count(c)`` the number of
    n-grams starting with ``c`` and ``V`` the vocabulary size. ``k = 0`` gives
    the maximum-likelihood estimate (unseen n-grams get probability 0), ``k = 1``
    is Laplace smoothing. A context never seen in training gets the uniform
    distribution ``1 / V`` (the formula's value for any ``k > 0``).

    Worked example (a bigram model, ``n = 2``) on ``"the cat sat the cat ran".split()``:
    the bigrams are (the, cat) x 2, (cat, sat), (sat, the), (cat, ran); V = 4.
    With ``k = 0``: ``P(sat | cat) = 1 / 2``, ``P(cat | the) = 2 / 2 = 1``.
    With ``k = 1``: ``P(sat | cat) = (1 + 1) / (2 + 4) = 1 / 3``,
    ``P(the | cat) = (0 + 1) / (2 + 4) = 1 / 6``.

    Args:
        tokens: the training sequence (a string is read as characters).
        n: order of the model: 1 unigram, 2 bigram, 3 trigram, ...
        k: pseudo-count added to every n-gram, ``>= 0``.
        vocab: the vocabulary, if it should hold tokens absent from ``tokens``;
            it must contain every training token. Default: the training tokens
            in order of first appearance.
    """

    def __init__(self, tokens: Sequence[Hashable] | str | torch.Tensor, n: int = 2, k: float = 1.0,
                 vocab: Iterable[Hashable] | None = None) -> None:
        check_int("n", n, 1)
        check_number("k", k, low=0)
        toks = _as_list(tokens, "tokens")
        if len(toks) < n:
            raise ValueError(f"tokens must hold at least n={n} tokens to count one n-gram, got {len(toks)}")
        seen = list(dict.fromkeys(toks))
        if vocab is None:
            self.vocab = seen
        else:
            self.vocab = list(dict.fromkeys(vocab))
            known = set(self.vocab)
            missing = [t for t in seen if t not in known]
            if missing:
                raise ValueError(f"vocab must contain every training token, got one without {missing[:5]}")
        self.n, self.k = n, float(k)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        self.counts = ngram_counts(toks, n)  # (c_1, ..., c_{n-1}, w) -> count
        self.context_counts: Counter = Counter()  # (c_1, ..., c_{n-1}) -> count of n-grams starting with it
        for gram, count in self.counts.items():
            self.context_counts[gram[:-1]] += count

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _context(self, context: Sequence[Hashable] | str | torch.Tensor) -> tuple:
        ctx = _as_list(context, "context")
        if len(ctx) < self.n - 1:
            raise ValueError(f"context must hold at least n - 1 = {self.n - 1} tokens, got {len(ctx)}")
        return tuple(ctx[len(ctx) - (self.n - 1):])  # the last n - 1 tokens; () for a unigram model

    def _check_token(self, token: Hashable) -> None:
        if token not in self.index:
            raise ValueError(f"token must be in the vocabulary ({self.vocab_size} tokens), got {token!r}")

    def prob(self, context: Sequence[Hashable] | str | torch.Tensor, token: Hashable) -> float:
        """``P(token | last n - 1 tokens of context)``.

        Example (the class docstring's bigram model, ``k = 1``):
        ``lm.prob(["the", "cat"], "sat")`` -> ``1/3``.
        """
        ctx = self._context(context)
        self._check_token(token)
        denominator = self.context_counts[ctx] + self.k * self.vocab_size
        if denominator == 0:  # unseen context and k = 0: nothing to go on
            return 1.0 / self.vocab_size
        return (self.counts[ctx + (token,)] + self.k) / denominator

    def next_token_probs(self, context: Sequence[Hashable] | str | torch.Tensor) -> torch.Tensor:
        """The whole next-token distribution, ``(V,)`` float64 in vocabulary order; sums to 1."""
        ctx = self._context(context)
        return torch.tensor([self.prob(ctx, tok) for tok in self.vocab], dtype=torch.float64)

    def perplexity(self, tokens: Sequence[Hashable] | str | torch.Tensor) -> float:
        """``exp(-mean log P(t_i | t_{i-n+1} .. t_{i-1}))`` over ``i = n-1 .. len-1``.

        The first ``n - 1`` tokens serve only as context. A token of probability
        0 (possible with ``k = 0``) gives ``inf``. A model that spreads its
        probability evenly over ``V`` tokens has perplexity exactly ``V``: it is
        as unsure as a fair ``V``-sided die. Example: a unigram model of
        ``"abcd"`` scores any text over ``a, b, c, d`` at perplexity 4.
        """
        toks = _as_list(tokens, "tokens")
        if len(toks) < self.n:
            raise ValueError(f"tokens must hold at least n={self.n} tokens to score one, got {len(toks)}")
        total = 0.0
        for i in range(self.n - 1, len(toks)):
            p = self.prob(toks[i - self.n + 1:i], toks[i])
            if p == 0.0:
                return math.inf
            total += math.log(p)
        return math.exp(-total / (len(toks) - self.n + 1))

    def generate(self, context: Sequence[Hashable] | str | torch.Tensor, max_new_tokens: int,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None) -> list:
        """Continue ``context`` by ``max_new_tokens`` tokens; returns the list, context included.

        Greedy by default (the most likely token, the first in vocabulary order
        on a tie); ``do_sample=True`` draws with :func:`course_utils.sampling.sample_next`
        (temperature, top-k, top-p), using ``generator`` if given.
        Example: a bigram model of ``"abcabc"`` continues ``"a"`` greedily to ``['a', 'b', 'c', 'a']``.
        """
        out = _as_list(context, "context")
        self._context(out)
        for tok in out:
            self._check_token(tok)
        ids = torch.tensor([[self.index[tok] for tok in out]], dtype=torch.long)  # (1, T)

        def next_logits(ids: torch.Tensor) -> torch.Tensor:  # (1, t) -> (1, V); probability 0 -> -inf
            return self.next_token_probs([self.vocab[i] for i in ids[0].tolist()]).log()[None]

        ids = decoding_loop(next_logits, ids, max_new_tokens, do_sample, temperature, top_k, top_p,
                            generator=generator)
        return [self.vocab[i] for i in ids[0].tolist()]


# ----------------------------------------------------------------------------- 2. recurrent networks


def rnn_step(x_t: torch.Tensor, h_prev: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor,
             b_h: torch.Tensor) -> torch.Tensor:
    """One step of an Elman RNN: ``h_t = tanh(x_t @ W_xh + h_prev @ W_hh + b_h)``.

    Shapes: ``x_t`` ``(B, I)`` (this step's input), ``h_prev`` ``(B, H)`` (the
    state so far), ``W_xh`` ``(I, H)``, ``W_hh`` ``(H, H)``, ``b_h`` ``(H,)``;
    returns ``h_t`` ``(B, H)``. The same weights are used at every step.

    ``torch.nn.RNNCell`` computes the same thing with its weights stored the
    other way round (``nn.Linear`` style, ``(out, in)``) and two biases:
    ``W_xh = weight_ih.T``, ``W_hh = weight_hh.T``, ``b_h = bias_ih + bias_hh``.
    Example: ``I = H = 1``, ``W_xh = W_hh = [[1.]]``, ``b_h = [0.]``, ``x_t = h_prev = [[0.5]]``
    -> ``tanh(1.0) = [[0.7616]]``.
    """
    for name, t, dims in (("x_t", x_t, 2), ("h_prev", h_prev, 2), ("W_xh", W_xh, 2), ("W_hh", W_hh, 2),
                          ("b_h", b_h, 1)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != dims:
            raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(t.shape)}")
    (B, I), H = x_t.shape, h_prev.shape[1]
    expected = {"h_prev": (B, H), "W_xh": (I, H), "W_hh": (H, H), "b_h": (H,)}
    for name, t in (("h_prev", h_prev), ("W_xh", W_xh), ("W_hh", W_hh), ("b_h", b_h)):
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]} (B={B}, I={I}, H={H}), got {tuple(t.shape)}")
    return torch.tanh(x_t @ W_xh + h_prev @ W_hh + b_h)  # (B, H)


State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # h (L, B, H) for "rnn"; (h, c) for "lstm"


class RNNLM(nn.Module):
    """A recurrent language model: embedding -> ``nn.RNN`` or ``nn.LSTM`` -> linear head.

    ``(B, T)`` ids -> ``(B, T, n_embd)`` embeddings -> ``(B, T, n_hidden)``
    outputs of the last recurrent layer -> ``(B, T, vocab_size)`` logits. The
    state after position ``t`` (``n_layer`` vectors of ``n_hidden``; twice that
    for an LSTM, which also keeps a cell state) is all the model knows about
    tokens ``0 .. t``. There is no context window: any length can be read.

    Args:
        vocab_size: number of token ids.
        n_embd: embedding width (the input size of the first recurrent layer).
        n_hidden: state width ``H`` of each recurrent layer.
        n_layer: stacked recurrent layers.
        cell: ``"rnn"`` (Elman, tanh) or ``"lstm"``.
        dropout: on the embeddings, between recurrent layers and before the head.
    """

    def __init__(self, vocab_size: int, n_embd: int, n_hidden: int, n_layer: int = 1, cell: str = "rnn",
                 dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("n_embd", n_embd), ("n_hidden", n_hidden),
                            ("n_layer", n_layer)):
            check_int(name, value, 1)
        check_one_of("cell", cell, CELLS)
        check_number("dropout", dropout, 0, 1, high_open=True)
        self.vocab_size, self.n_embd, self.n_hidden, self.n_layer = vocab_size, n_embd, n_hidden, n_layer
        self.cell, self.dropout = cell, float(dropout)
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.drop = nn.Dropout(dropout)
        rnn_class = nn.LSTM if cell == "lstm" else nn.RNN
        self.rnn = rnn_class(n_embd, n_hidden, num_layers=n_layer, batch_first=True,
                             dropout=dropout if n_layer > 1 else 0.0)  # torch applies it between layers only
        self.lm_head = nn.Linear(n_hidden, vocab_size)

    def num_parameters(self) -> int:
        """Number of parameters. Example: ``RNNLM(10, 4, 8).num_parameters()`` -> 242:
        embedding 10*4, RNN 4*8 + 8*8 + 8 + 8 (``nn.RNN`` keeps two biases), head 8*10 + 10."""
        return sum(p.numel() for p in self.parameters())

    def _check_ids(self, input_ids: Any, name: str = "input_ids") -> None:
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"{name} must have shape (B, T) with T >= 1, got {tuple(input_ids.shape)}")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name} must be an integer tensor (torch.long), got {input_ids.dtype}")
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"{name} must be in [0, {self.vocab_size}), got values from {lo} to {hi}")

    def forward_with_state(self, input_ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Read ``input_ids`` ``(B, T)`` starting from ``state`` (``None`` = zeros).

        Returns logits ``(B, T, vocab_size)`` and the state after the last
        token: ``h`` ``(n_layer, B, n_hidden)``, or ``(h, c)`` for an LSTM.
        Reading a text in two pieces, passing the state on, gives the same
        logits as reading it at once.
        """
        self._check_ids(input_ids)
        x = self.drop(self.wte(input_ids))  # (B, T, n_embd)
        out, state = self.rnn(x, state)  # (B, T, n_hidden)
        return self.lm_head(self.drop(out)), state  # (B, T, V)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits, as :class:`course_utils.transformer.DecoderOnlyLM`.

        Args:
            input_ids: ``(B, T)`` token ids.
            labels: ``(B, T)``, normally ``input_ids`` itself: position ``t`` is
                scored on predicting ``labels[:, t + 1]``; -100 is skipped.
            attention_mask: ``(B, T)``, 1 for real tokens, 0 for padding, which
                must be on the right (an RNN reads left to right, so right
                padding never changes the logits of real tokens; set their
                labels to -100, as :class:`course_utils.data.CausalLMCollator` does).

        Returns:
            ``(logits, loss)``: logits ``(B, T, vocab_size)``, loss a scalar or ``None``.
        """
        self._check_ids(input_ids)
        B, T = input_ids.shape
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != (B, T):
                shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else attention_mask
                raise ValueError(f"attention_mask must be a tensor of shape ({B}, {T}), got {shape}")
            m = attention_mask.long()
            if bool((m[:, 1:] > m[:, :-1]).any()):
                raise ValueError("attention_mask must pad on the right (1s, then 0s) for an RNN, "
                                 "got a 0 before a 1 in some row")
        logits, _ = self.forward_with_state(input_ids)
        loss = None
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.shape != input_ids.shape:
                shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
                raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}")
            loss = _lm_loss(logits, _next_token_labels(labels))  # position t predicts token t + 1
        return logits, loss

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue ``input_ids`` ``(B, T)`` by ``max_new_tokens`` tokens; returns ``(B, T + n)``.

        The prompt is read once; after that each new token is one recurrent
        step from the carried state, the same work for token 10 as for token
        10,000 (a transformer's step grows with its KV cache). Greedy by
        default; ``do_sample=True`` draws after temperature, top-k and top-p
        (:func:`course_utils.sampling.sample_next`; ``None`` = off).
        """
        self._check_ids(input_ids)
        with evaluating(self), torch.inference_mode():
            state = None  # what the model carries from token to token

            def next_logits(ids: torch.Tensor) -> torch.Tensor:
                """All ids so far ``(B, t)`` -> logits of the next token ``(B, V)``."""
                nonlocal state
                new = ids if state is None else ids[:, -1:]  # the prompt once, then one token: O(1) per step
                logits, state = self.forward_with_state(new, state)  # (B, t_new, V)
                return logits[:, -1]

            out = decoding_loop(next_logits, input_ids, max_new_tokens, do_sample, temperature, top_k, top_p,
                                generator=generator)
        return out.clone()  # made outside inference_mode: an ordinary tensor


# ----------------------------------------------------------------------------- 3. associative recall


def _rng(generator: torch.Generator | None) -> random.Random:
    """A Python ``random.Random`` for :mod:`course_utils.data`'s task generators,
    seeded with one draw from ``generator`` (``None``: torch's global generator)."""
    return random.Random(int(torch.randint(2**62, (), generator=generator)))


def _recall_lm_batch(pairs_and_query: torch.Tensor, answer: torch.Tensor) -> dict[str, torch.Tensor]:
    """``[k1 v1 ... kn vn q]`` ``(B, 2n+1)`` and answers ``(B,)`` -> an LM batch of length ``2n+2``."""
    input_ids = torch.cat([pairs_and_query, answer[:, None]], dim=1)  # (B, 2n+2)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, -1] = answer  # scored where the model reads q (position T-2): logits[:, -2] vs labels[:, -1]
    return {"input_ids": input_ids, "labels": labels}


def recall_batch(batch_size: int, n_pairs: int = 8, vocab_size: int = 64, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Fresh associative-recall sequences as a language-modelling batch.

    The layout of :func:`course_utils.data.associative_recall` (keys distinct in
    ``[0, vocab_size // 2)``, values in ``[vocab_size // 2, vocab_size)`` with
    replacement, the query one of the keys) with the answer appended::

        input_ids  k1  v1  ...  kn  vn  q     a        (B, T = 2 n + 2)
        labels    -100 -100 ... -100 -100 -100 a

    A causal LM shifts labels inside (``logits[:, :-1]`` against ``labels[:, 1:]``),
    so the only scored prediction is the one made at ``q`` (position ``T - 2``),
    which sees the pairs and the query but not the answer. The same batch works
    for :class:`RNNLM` and :class:`course_utils.transformer.DecoderOnlyLM` (whose
    ``block_size`` must be at least ``2 n + 2``). The sequences are drawn by
    :mod:`course_utils.data` (the generator of ``associative_recall``) with a
    Python random generator seeded from ``generator``, then moved to ``device``,
    so a seed gives the same batches everywhere. Example (vocab 8, one pair):
    ``input_ids [[1, 5, 1, 5]]``, ``labels [[-100, -100, -100, 5]]``.
    """
    check_int("batch_size", batch_size, 1)
    rows, answers = _recall_rows(batch_size, n_pairs, vocab_size, _rng(generator))
    batch = _recall_lm_batch(torch.tensor(rows), torch.tensor(answers))  # (B, 2n + 2) each
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def recall_collate(examples: Sequence[Mapping[str, Any]] | Mapping[str, Any],
                   device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Turn rows of :func:`course_utils.data.associative_recall` into the batch of :func:`recall_batch`.

    ``examples``: a list of ``{"input_ids": [k1, v1, ..., q], "target": a}``
    (use it as a ``DataLoader``'s ``collate_fn``), or a column dict such as
    ``dataset[:32]``. Example: ``[{"input_ids": [1, 5, 1], "target": 5}]`` ->
    ``input_ids [[1, 5, 1, 5]]``, ``labels [[-100, -100, -100, 5]]``.
    """
    if isinstance(examples, Mapping):
        if "input_ids" not in examples or "target" not in examples:
            raise ValueError(f"examples must hold 'input_ids' and 'target', got keys {sorted(examples)}")
        rows, targets = list(examples["input_ids"]), list(examples["target"])
    else:
        if len(examples) == 0:
            raise ValueError("examples must hold at least one example, got none")
        for e in examples:
            if not isinstance(e, Mapping) or "input_ids" not in e or "target" not in e:
                raise ValueError(f"each example must be a dict with 'input_ids' and 'target', got {e!r}")
        rows, targets = [e["input_ids"] for e in examples], [e["target"] for e in examples]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"examples must all have the same length (same n_pairs), got lengths {sorted(lengths)}")
    batch = _recall_lm_batch(torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long))
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


@torch.no_grad()
def recall_accuracy(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> float:
    """Share of sequences whose answer is the argmax (over the whole vocabulary)
    of the prediction made at the query, ``logits[:, -2]``; ``batch`` as from :func:`recall_batch`."""
    with evaluating(model):
        logits = model(batch["input_ids"])[0]  # (B, T, V)
    return (logits[:, -2].argmax(dim=-1) == batch["labels"][:, -1]).float().mean().item()


def copy_batch(batch_size: int, length: int = 16, vocab_size: int = 64, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Fresh copying sequences as a language-modelling batch: recall by position.

    ``length`` random symbols (ids ``0 .. vocab_size - 2``), a separator
    ``SEP = vocab_size - 1``, then the same symbols again; only the copy is
    scored (the layout of :func:`course_utils.data.copy_task`)::

        input_ids  x1   ...  xL  SEP  x1 ... xL        (B, T = 2 L + 1)
        labels    -100  ... -100 -100 x1 ... xL

    Each copied token sits ``L + 1`` positions after its original, so attention
    can fetch it by relative position, while a recurrent model must have stored
    all ``L`` symbols in its state (Graves et al., 2014; Jelassi et al., 2024).
    The sequences are drawn by :mod:`course_utils.data` (the generator of
    ``copy_task``) with a Python random generator seeded from ``generator``,
    then moved to ``device``.
    Example (vocab 4, length 2): ``input_ids [[2, 0, 3, 2, 0]]``, ``labels [[-100, -100, -100, 2, 0]]``.
    """
    check_int("batch_size", batch_size, 1)
    input_ids, labels, _ = _copy_rows(batch_size, length, vocab_size, _rng(generator))
    batch = {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels)}  # (B, 2L + 1) each
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


@torch.no_grad()
def copy_accuracy(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> float:
    """Share of the copied tokens (labels != -100) that are the argmax of the
    prediction made one position earlier; ``batch`` as from :func:`copy_batch`."""
    with evaluating(model):
        logits = model(batch["input_ids"])[0]  # (B, T, V)
    scored = batch["labels"][:, 1:] != IGNORE_INDEX  # (B, T-1): position t predicts t + 1
    hits = logits[:, :-1].argmax(dim=-1) == batch["labels"][:, 1:]
    return hits[scored].float().mean().item()


# Model sizes of the experiment: about 0.28 M parameters for the LSTM (2 layers of 128; 0.95 M with 256, which
# took about three times as long per update on a 2-core CPU), 0.1 M for the transformer (vocab 64).
# "init" is the transformer's starting point (course_utils.transformer.init_weights). Measured with 8 pairs,
# batch 64: from GPT-2's start (N(0, 0.02), residual projections 0.02 / sqrt(2 * n_layer)) this 2-layer model
# was still on the recall plateau after 8,000 steps at lr 1e-3 (and 20,000 at 3e-3); from "lecun" at lr 1e-3 it
# left it after 1,500 to 2,500 steps in each of four seeds (at 3e-3 it had not after 4,000). Chapter 2 shows
# both starts side by side.
RECALL_MODELS: dict[str, dict[str, Any]] = {
    "lstm": {"n_embd": 128, "n_hidden": 128, "n_layer": 2, "lr": 3e-3},
    "rnn": {"n_embd": 128, "n_hidden": 256, "n_layer": 2, "lr": 1e-3},
    "transformer": {"n_embd": 64, "n_head": 4, "n_layer": 2, "lr": 1e-3, "init": "lecun"},
}


def _build_recall_model(name: str, vocab_size: int, block_size: int, sizes: Mapping[str, Any]) -> nn.Module:
    if name == "transformer":
        from .transformer import DecoderOnlyLM, TransformerConfig, init_weights

        model = DecoderOnlyLM(TransformerConfig(vocab_size=vocab_size, block_size=block_size, n_layer=sizes["n_layer"],
                                                n_head=sizes["n_head"], n_embd=sizes["n_embd"]))
        return init_weights(model, sizes.get("init", "gpt2"))
    return RNNLM(vocab_size, sizes["n_embd"], sizes["n_hidden"], sizes["n_layer"], cell=name)


def associative_recall_experiment(
    n_pairs: int = 8,
    vocab_size: int = 64,
    time_budget_s: float = math.inf,
    models: Sequence[str] = ("lstm", "transformer"),
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str | None = None,
    batch_size: int = 64,
    n_eval: int = 1000,
    sizes: Mapping[str, Mapping[str, Any]] | None = None,
    log_every: int = 10,
    task: str = "recall",
    max_steps: int | None = 3000,
) -> dict[str, dict[str, Any]]:
    """Train each model on fresh recall batches for the same number of updates, then test it.

    ``task="recall"`` (the default): :func:`recall_batch` with ``n_pairs`` pairs;
    accuracy is the share of queries answered exactly. ``task="copy"``:
    :func:`copy_batch` of ``2 * n_pairs`` symbols, as many tokens to remember as
    the pairs hold; accuracy is the share of copied tokens predicted right.

    Each model (``"lstm"``, ``"rnn"``: an :class:`RNNLM`; ``"transformer"``: a
    :class:`course_utils.transformer.DecoderOnlyLM`; sizes and learning rates in
    ``RECALL_MODELS``, overridable per model with ``sizes``) starts from
    ``torch.manual_seed(seed)`` and sees the same stream of :func:`recall_batch`
    batches. Training is the course's loop, :func:`course_utils.training.train`:
    AdamW (no weight decay) at a constant learning rate after 50 warmup steps,
    the gradient norm clipped to 1, for ``max_steps`` updates. The models are
    compared at equal numbers of updates, batch size and data, so the outcome
    does not depend on the machine's speed (with the same seed, a slower or
    faster machine of the same kind ends the race the same way); only
    ``"seconds"`` differs. A
    ``time_budget_s`` also stops a run once that many seconds have passed
    (batch making included), whichever comes first; ``max_steps=None`` with a
    finite ``time_budget_s`` gives the older equal-time race, whose outcome
    depends on the machine. Then the exact-match accuracy of the
    argmax answer is measured on ``n_eval`` fresh sequences (another seed).
    ``device``: ``None`` = the best available (:func:`course_utils.device.get_device`).

    Returns ``{name: result}`` where each result holds ``"accuracy"`` (0..1),
    ``"steps"`` (optimizer updates done), ``"params"``, ``"seconds"`` (training
    time), ``"final_loss"`` (mean of the last ``log_every`` steps) and
    ``"loss_curve"`` (``{"step": [...], "time": [...], "loss": [...]}``, one
    point per ``log_every`` steps).

    What to expect: the recall circuit of a transformer (a previous-token head
    feeding an induction head, Olsson et al., 2022) appears suddenly after a
    loss plateau at about ``log(n_pairs)`` (the model has learned to guess among
    the values present). How long the plateau lasts depends on the start, the
    learning rate and the number of pairs: with the defaults (``init="lecun"``,
    lr 1e-3, 8 pairs) it ended after 1,500 to 2,500 steps in each of four seeds
    measured; with ``sizes={"transformer": {"init": "gpt2"}}`` it was still
    there after 8,000. Read ``loss_curve`` (:func:`plateau_exit_step`) before
    drawing conclusions.
    """
    from .device import get_device
    from .training import TrainConfig, train

    check_one_of("task", task, ("recall", "copy"))
    _check_recall_sizes(n_pairs, vocab_size)
    for name, value in (("batch_size", batch_size), ("n_eval", n_eval), ("log_every", log_every)):
        check_int(name, value, minimum=1)
    if max_steps is not None:
        check_int("max_steps", max_steps, minimum=1)
    check_number("time_budget_s", time_budget_s, low=0, low_open=True, allow_inf=True)
    if max_steps is None and math.isinf(time_budget_s):
        raise ValueError("max_steps=None needs a finite time_budget_s: give the run a budget of updates or seconds")
    if isinstance(models, str) or not models or any(m not in RECALL_MODELS for m in models):
        raise ValueError(f"models must be a non-empty sequence of names from {tuple(RECALL_MODELS)}, got {models!r}")
    if sizes is not None and any(m not in RECALL_MODELS for m in sizes):
        raise ValueError(f"sizes must be keyed by names from {tuple(RECALL_MODELS)}, got keys {sorted(sizes)}")
    check_int("seed", seed, minimum=0)
    device = get_device(device)
    if task == "recall":
        block_size = 2 * n_pairs + 2
        make_batch = lambda n, gen: recall_batch(n, n_pairs, vocab_size, generator=gen, device=device)
        accuracy = recall_accuracy
    else:
        block_size = 4 * n_pairs + 1
        make_batch = lambda n, gen: copy_batch(n, 2 * n_pairs, vocab_size, generator=gen, device=device)
        accuracy = copy_accuracy
    steps = max_steps if max_steps is not None else 10**12  # no step limit: the time budget ends the run
    results: dict[str, dict[str, Any]] = {}
    for name in models:
        cfg = {**RECALL_MODELS[name], **(dict(sizes.get(name, {})) if sizes else {})}
        torch.manual_seed(seed)
        model = _build_recall_model(name, vocab_size, block_size, cfg)
        config = TrainConfig(
            max_steps=steps, max_seconds=None if math.isinf(time_budget_s) else time_budget_s,
            lr=cfg["lr"], warmup_steps=min(50, steps), min_lr_ratio=1.0,  # linear warmup, then constant
            weight_decay=0.0, betas=(0.9, 0.999), grad_clip=1.0,  # plain AdamW, as torch.optim.AdamW's defaults
            log_every=log_every, seed=seed, device=device, use_amp=False, progress=progress, desc=name,
        )
        # each model sees the same stream of fresh batches: train seeds `generator` with `seed`
        history = train(model, lambda split, generator: make_batch(batch_size, generator), config)
        eval_gen = torch.Generator().manual_seed(seed + 1_000_003)  # held-out sequences: another stream
        correct = 0
        for chunk_start in range(0, n_eval, 500):
            n = min(500, n_eval - chunk_start)
            correct += accuracy(model, make_batch(n, eval_gen)) * n
        results[name] = {
            "accuracy": correct / n_eval,
            "steps": history.step[-1],
            "params": sum(p.numel() for p in model.parameters()),
            "seconds": history.time[-1],
            "final_loss": history.train_loss[-1],
            "loss_curve": {"step": history.step, "time": history.time, "loss": history.train_loss},
        }
    return results


def plateau_exit_step(curve: Mapping[str, Sequence[float]], level: float, fraction: float = 0.5) -> int | None:
    """The first logged step at which the loss fell below ``fraction * level``; ``None`` if it never did.

    ``curve``: a ``"loss_curve"`` of :func:`associative_recall_experiment`
    (``{"step": [...], "loss": [...]}``, ``"time"`` ignored). ``level``: the
    plateau's loss, ``log(n_pairs)`` for recall (guessing among the values
    present). A step, not a time, so the answer is the same on any machine.
    Example: ``plateau_exit_step({"step": [10, 20, 30], "loss": [2.1, 2.0, 0.4]}, 2.08)`` -> ``30``.
    """
    check_number("level", level, low=0, low_open=True)
    check_number("fraction", fraction, 0, 1, low_open=True, high_open=True)
    if not isinstance(curve, Mapping) or not {"step", "loss"} <= set(curve) or len(curve["step"]) != len(curve["loss"]):
        raise ValueError("curve must be a dict with lists 'step' and 'loss' of equal length")
    for step, loss in zip(curve["step"], curve["loss"]):
        if loss < fraction * level:
            return int(step)
    return None


# ----------------------------------------------------------------------------- 4. what a longer context costs


def context_cost_table(context_lengths: Sequence[int], rnn: RNNLM | Mapping[str, Any], transformer: Any,
                       batch_size: int = 1, bytes_per_value: int = 4) -> list[dict[str, int]]:
    """Memory and compute against context length, RNN versus attention, from the sizes alone.

    ``rnn``: an :class:`RNNLM` or a dict with ``vocab_size``, ``n_embd``,
    ``n_hidden``, ``n_layer``, ``cell``. ``transformer``: a
    :class:`course_utils.transformer.TransformerConfig` (or a model holding one
    as ``.config``). One row per context length ``T``, counting one sequence
    times ``batch_size``, ``bytes_per_value`` bytes per number (4 for fp32),
    FLOPs as 2 per multiply-add, matrix products only (no softmax, norms or
    nonlinearities):

    * ``rnn_state_bytes``: what an RNN keeps of the past, ``n_layer * H`` numbers
      (``2 *`` that for an LSTM, which adds a cell state). Constant in ``T``.
    * ``attn_kv_cache_bytes``: what a transformer keeps, a key and a value per
      layer per past token: ``2 * n_layer * T * C``. Linear in ``T``.
    * ``rnn_flops_per_token``: one step, ``2 * g * (I * H + H * H)`` per layer
      (``g`` = 1 gate for an RNN, 4 for an LSTM; ``I`` the layer's input width),
      plus the head ``2 * H * V``. Constant.
    * ``attn_flops_per_token``: the next token with a KV cache of ``T`` tokens:
      the weight matrices ``2 * (4 C^2 + 2 C * n_inner)`` per layer, the head
      ``2 * C * V``, and attention ``4 * T * C`` per layer (scores ``q k^T`` and
      the weighted sum of values, ``2 T C`` each). Linear.
    * ``rnn_sequence_flops`` and ``attn_sequence_flops``: reading all ``T``
      tokens, the sum of the per-token costs for contexts ``1 .. T``: linear for
      the RNN, quadratic for attention (``2 C n_layer T (T + 1)`` from attention).
    * ``attn_score_bytes``: the ``(n_head, T, T)`` score matrix of one layer when
      a whole sequence is processed at once without a fused kernel. Quadratic.

    Example: an LSTM with 2 layers of 256 keeps 2 * 2 * 256 * 4 B = 4 KiB at any
    length; a transformer with 2 layers of width 64 keeps 2 * 2 * 64 * 4 B = 1 KiB
    *per token* in its KV cache, so it passes the LSTM at 4 tokens.
    """
    if isinstance(context_lengths, (str, bytes)) or not isinstance(context_lengths, Sequence) or not context_lengths:
        raise ValueError(f"context_lengths must be a non-empty sequence of ints >= 1, got {context_lengths!r}")
    for i, t in enumerate(context_lengths):
        check_int(f"context_lengths[{i}]", t, 1)
    check_int("batch_size", batch_size, 1)
    check_int("bytes_per_value", bytes_per_value, 1)
    if isinstance(rnn, RNNLM):
        V, E, H, L_r, cell = rnn.vocab_size, rnn.n_embd, rnn.n_hidden, rnn.n_layer, rnn.cell
    elif isinstance(rnn, Mapping):
        missing = [k for k in ("vocab_size", "n_embd", "n_hidden", "n_layer", "cell") if k not in rnn]
        if missing:
            raise ValueError(f"rnn must be an RNNLM or a dict with vocab_size, n_embd, n_hidden, n_layer, cell; "
                             f"got one without {missing}")
        V, E, H, L_r, cell = (rnn[k] for k in ("vocab_size", "n_embd", "n_hidden", "n_layer", "cell"))
        if cell not in CELLS:
            raise ValueError(f"rnn['cell'] must be one of {CELLS}, got {cell!r}")
    else:
        raise TypeError(f"rnn must be an RNNLM or a dict of its sizes, got {type(rnn).__name__}")
    config = getattr(transformer, "config", transformer)
    needed = ("vocab_size", "n_layer", "n_head", "n_embd", "inner")
    if not all(hasattr(config, k) for k in needed):
        raise TypeError(f"transformer must be a TransformerConfig or a model with .config, "
                        f"got {type(transformer).__name__}")
    C, L_t, n_head, inner, V_t = config.n_embd, config.n_layer, config.n_head, config.inner, config.vocab_size

    gates = 4 if cell == "lstm" else 1
    rnn_state = L_r * H * (2 if cell == "lstm" else 1) * batch_size * bytes_per_value
    rnn_step = sum(2 * gates * ((E if layer == 0 else H) * H + H * H) for layer in range(L_r)) + 2 * H * V
    rnn_step *= batch_size
    attn_weights = (L_t * 2 * (4 * C * C + 2 * C * inner) + 2 * C * V_t) * batch_size  # per token, any T
    rows = []
    for T in context_lengths:
        rows.append({
            "context_length": T,
            "rnn_state_bytes": rnn_state,
            "attn_kv_cache_bytes": 2 * L_t * T * C * batch_size * bytes_per_value,
            "rnn_flops_per_token": rnn_step,
            "attn_flops_per_token": attn_weights + 4 * L_t * T * C * batch_size,
            "rnn_sequence_flops": T * rnn_step,
            "attn_sequence_flops": T * attn_weights + 2 * L_t * C * T * (T + 1) * batch_size,
            "attn_score_bytes": n_head * T * T * batch_size * bytes_per_value,
        })
    return rows
