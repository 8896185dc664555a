"""Compute-optimal scaling: how to split a training budget between parameters and tokens.

Follows two papers:

* Kaplan et al. (2020), "Scaling Laws for Neural Language Models": training a
  model of ``N`` parameters on ``D`` tokens costs about ``C = 6 N D``
  floating-point operations (:func:`training_flops`: 2 per parameter and token
  forward, 4 backward), and budgets are quoted in petaflop/s-days, ``10**15``
  operations a second for a day (:func:`petaflop_s_days`).
* Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models"
  (Chinchilla): the final loss follows ``L(N, D) = E + A / N**alpha + B / D**beta``
  (:class:`LossLaw`), fitted by minimising a Huber loss between the predicted and
  measured *log* losses with L-BFGS, started from the best points of a grid
  (:func:`fit_loss_law`); at a fixed budget ``C`` the law has one best size
  (:meth:`LossLaw.optimum`); an iso-FLOP profile, loss against ``ln N`` at one
  budget, is fitted with a parabola (:func:`fit_isoflop`); and their rule of
  thumb, about 20 tokens per parameter, splits a budget without any fit
  (:func:`compute_optimal`).

The module also runs a small measured sweep of the course's decoder
(:class:`~course_utils.transformer.DecoderOnlyLM`) on the course's prose
corpus, with the tokenizer of the shipped ``prose`` model: several sizes, each
trained with :func:`course_utils.training.train` at several compute budgets,
one run per point, scored on the whole validation split. The table ships in
``course_utils/pretrained/scaling/sweep.json`` (:func:`load_sweep`) with the
command that re-makes it, its settings and how long it took::

    python -m course_utils.scaling sweep             # re-make the shipped table (13 minutes here, one thread)
    python -m course_utils.scaling sweep --out x.json
    python -m course_utils.scaling point 1 32 2 1e11  # re-run one point (n_layer, n_embd, n_head, budget)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .checks import check_int, check_number

__all__ = [
    "PF_DAY",
    "training_flops",
    "petaflop_s_days",
    "compute_optimal",
    "LossLaw",
    "fit_loss_law",
    "fit_isoflop",
    "SweepSettings",
    "SWEEP_PATH",
    "SWEEP_COMMAND",
    "sweep_data",
    "run_point",
    "sweep",
    "load_sweep",
    "main",
]

PF_DAY = 1e15 * 86_400  # FLOPs in one petaflop/s-day (Kaplan et al. 2020; Brown et al. 2020)
SWEEP_PATH = Path(__file__).resolve().parent / "pretrained" / "scaling" / "sweep.json"
SWEEP_COMMAND = "python -m course_utils.scaling sweep"


# ----------------------------------------------------------------------------- compute


def training_flops(n_params: float, n_tokens: float) -> float:
    """Training compute ``C = 6 N D`` in FLOPs. Example: ``training_flops(175e9, 300e9)`` -> ``3.15e23``."""
    n = check_number("n_params", n_params, low=0, low_open=True)
    d = check_number("n_tokens", n_tokens, low=0, low_open=True)
    return 6.0 * n * d


def petaflop_s_days(flops: float) -> float:
    """FLOPs in petaflop/s-days (``10**15 * 86400`` FLOPs). Example: ``petaflop_s_days(8.64e19)`` -> ``1.0``."""
    return check_number("flops", flops, low=0) / PF_DAY


def compute_optimal(flops: float, tokens_per_param: float = 20.0) -> tuple[float, float]:
    """Split a budget by a fixed ratio: ``(N, D)`` with ``6 N D = flops`` and ``D = tokens_per_param * N``.

    ``N = sqrt(flops / (6 * tokens_per_param))``. Example: ``compute_optimal(1.2e20)`` -> ``(1e9, 2e10)``.
    """
    c = check_number("flops", flops, low=0, low_open=True)
    r = check_number("tokens_per_param", tokens_per_param, low=0, low_open=True)
    n = math.sqrt(c / (6.0 * r))
    return n, r * n


# ----------------------------------------------------------------------------- the loss law


@dataclass(frozen=True)
class LossLaw:
    """``L(N, D) = E + A / N**alpha + B / D**beta`` (Hoffmann et al. 2022, eq. 2).

    ``E`` is the loss no model reaches (the entropy of text, in the paper's
    reading), ``A / N**alpha`` what a finite model loses, ``B / D**beta`` what
    finite data loses. Hoffmann et al.'s own fit: ``LossLaw(1.69, 406.4, 410.7, 0.34, 0.28)``.
    """

    E: float  # irreducible loss (nats per token)
    A: float  # size term's scale
    B: float  # data term's scale
    alpha: float  # size exponent
    beta: float  # data exponent

    def __post_init__(self) -> None:
        check_number("E", self.E, low=0)
        for name in ("A", "B", "alpha", "beta"):
            check_number(name, getattr(self, name), low=0, low_open=True)

    def predict(self, n_params: Any, n_tokens: Any) -> Any:
        """The loss at ``N`` parameters and ``D`` tokens: a float for two numbers, else a float64 tensor
        of the broadcast shape. Example: ``LossLaw(1.69, 406.4, 410.7, 0.34, 0.28).predict(70e9, 1.4e12)`` -> ``1.94``."""
        n, d = _positive("n_params", n_params), _positive("n_tokens", n_tokens)
        loss = self.E + self.A * n ** -self.alpha + self.B * d ** -self.beta
        return loss.item() if loss.dim() == 0 and _is_number(n_params) and _is_number(n_tokens) else loss

    def optimum(self, flops: float) -> tuple[float, float]:
        """The ``(N, D)`` of least predicted loss with ``6 N D = flops`` (Hoffmann et al. eq. 4):
        ``N = G * (C / 6)**(beta / (alpha + beta))`` with ``G = (alpha A / (beta B))**(1 / (alpha + beta))``,
        and ``D = C / (6 N)``."""
        c = check_number("flops", flops, low=0, low_open=True)
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1.0 / (a + b))
        n = g * (c / 6.0) ** (b / (a + b))
        return n, c / (6.0 * n)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _positive(name: str, values: Any) -> torch.Tensor:
    """``values`` as a float64 tensor of finite positive numbers, else ValueError/TypeError."""
    if isinstance(values, bool) or isinstance(values, str):
        raise TypeError(f"{name} must be numbers, got {type(values).__name__}")
    try:
        t = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be numbers, got {type(values).__name__}") from err
    if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise ValueError(f"{name} must be finite numbers > 0, got {values!r}")
    return t


def _points(n_params: Any, n_tokens: Any, losses: Any, minimum: int) -> tuple[torch.Tensor, ...]:
    """Three 1-D float64 tensors of one length, at least ``minimum``, all positive and finite."""
    out = tuple(_positive(name, v).reshape(-1) for name, v in
                (("n_params", n_params), ("n_tokens", n_tokens), ("losses", losses)))
    if len({len(t) for t in out}) != 1:
        raise ValueError(f"n_params, n_tokens and losses must have one length, got {[len(t) for t in out]}")
    if len(out[0]) < minimum:
        raise ValueError(f"need at least {minimum} points, got {len(out[0])}")
    return out


def _log_law(theta: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor) -> torch.Tensor:
    """Predicted log loss ``LSE(a - alpha ln N, b - beta ln D, e)`` for parameter rows
    ``theta = (a, b, e, alpha, beta)`` of shape ``(K, 5)`` and points ``(P,)``: returns ``(K, P)``."""
    a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))  # each (K, 1)
    terms = torch.stack([a - alpha * log_n, b - beta * log_d, e.expand(-1, len(log_n))])  # (3, K, P)
    return torch.logsumexp(terms, dim=0)  # (K, P)


def fit_loss_law(n_params: Sequence[float], n_tokens: Sequence[float], losses: Sequence[float],
                 delta: float = 1e-3, starts: int = 16, max_iter: int = 500) -> LossLaw:
    """Fit ``L(N, D) = E + A / N**alpha + B / D**beta`` to measured final losses, as Hoffmann et al. do.

    With ``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)``, the predicted log loss
    is ``LSE(a - alpha ln N, b - beta ln D, e)``; the fit minimises the sum of
    Huber losses (threshold ``delta``, theirs is ``1e-3``) between it and
    ``ln L`` with L-BFGS. It starts from the ``starts`` best points (lowest
    objective) of their grid: ``alpha, beta`` in ``{0, 0.5, ..., 2}``, ``e`` in
    ``{-1, -0.5, ..., 1}``, ``a, b`` in ``{0, 5, ..., 25}``, and keeps the best
    result. Needs at least 5 points (the law has 5 parameters), all positive.
    """
    n, d, loss = _points(n_params, n_tokens, losses, minimum=5)
    check_number("delta", delta, low=0, low_open=True)
    check_int("starts", starts, minimum=1)
    check_int("max_iter", max_iter, minimum=1)
    log_n, log_d, target = n.log(), d.log(), loss.log()

    def objective(theta: torch.Tensor) -> torch.Tensor:  # (K, 5) -> (K,)
        pred = _log_law(theta, log_n, log_d)
        return F.huber_loss(pred, target.expand_as(pred), delta=delta, reduction="none").sum(-1)

    exps, es, scales = [0.0, 0.5, 1.0, 1.5, 2.0], [-1.0, -0.5, 0.0, 0.5, 1.0], [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    grid = torch.tensor(list(itertools.product(scales, scales, es, exps, exps)), dtype=torch.float64)  # (4500, 5)
    with torch.no_grad():
        first = grid[objective(grid).argsort()[:starts]]  # (starts, 5)
    best, best_value = None, math.inf
    for theta0 in first:
        theta = theta0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12,
                                tolerance_change=1e-15, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            value = objective(theta[None])[0]
            value.backward()
            return value

        opt.step(closure)
        with torch.no_grad():
            value = objective(theta[None])[0].item()
        if math.isfinite(value) and value < best_value and bool((theta[3:] > 0).all()):
            best, best_value = theta.detach().clone(), value
    if best is None:
        raise ValueError("no fit with positive exponents: the losses do not fall with N and D")
    a, b, e, alpha, beta = best.tolist()
    return LossLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)


def fit_isoflop(n_params: Sequence[float], losses: Sequence[float]) -> tuple[float, float]:
    """The best size on one iso-FLOP profile (Hoffmann et al.'s approach 2): fit
    ``L = c0 + c1 x + c2 x**2`` with ``x = ln N`` by least squares and return the
    vertex ``(N, L)``, ``N = exp(-c1 / (2 c2))``. Needs 3 points or more and a
    profile that curves upwards (``c2 > 0``), else ValueError.
    Example: losses ``(ln N - ln 1e5)**2 + 3`` at ``N = 1e4, 1e5, 1e6`` -> ``(1e5, 3.0)``.
    """
    n, _, loss = _points(n_params, n_params, losses, minimum=3)
    x = n.log()
    design = torch.stack([torch.ones_like(x), x, x * x], dim=1)  # (P, 3)
    c0, c1, c2 = torch.linalg.lstsq(design, loss[:, None]).solution[:, 0].tolist()
    if c2 <= 0:
        raise ValueError(f"the profile does not curve upwards (c2 = {c2:.3g}): it has no minimum")
    x_best = -c1 / (2 * c2)
    return math.exp(x_best), c0 + c1 * x_best + c2 * x_best ** 2


# ----------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class SweepSettings:
    """What the sweep trains: every size in ``sizes`` at every budget in ``budgets``."""

    sizes: tuple[tuple[int, int, int], ...] = ((1, 8, 1), (1, 16, 2), (1, 24, 2), (1, 32, 2), (2, 48, 3))
    #                                           (n_layer, n_embd, n_head) of each size
    budgets: tuple[float, ...] = (5e10, 1e11, 2e11, 4e11)  # compute per run, FLOPs (6ND)
    block_size: int = 64  # tokens per window
    batch_size: int = 8  # windows per step: 512 tokens
    lr: float = 5e-3  # peak learning rate (AdamW), the same for every size
    warmup_fraction: float = 0.1  # linear warmup over this share of the steps, then a cosine to lr / 10
    weight_decay: float = 0.1
    seed: int = 0  # seeds the weights and the order of the windows
    threads: int = 1  # torch threads (the table was made with one)

    def to_dict(self) -> dict[str, Any]:
        return {k: [list(s) for s in v] if k == "sizes" else list(v) if k == "budgets" else v
                for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepSettings":
        d = dict(d, sizes=tuple(tuple(s) for s in d["sizes"]), budgets=tuple(d["budgets"]))
        return cls(**d)


def sweep_data() -> dict[str, Any]:
    """The prose corpus encoded with the shipped ``prose`` model's tokenizer (2,048 ids), as
    ``python -m course_utils.pretrain prose`` encodes it: ``{"train": (n,), "validation": (m,)}``
    token tensors, each paragraph followed by ``<|endoftext|>``, and ``vocab_size``."""
    from .data import prose_text
    from .pretrain import PRETRAINED_DIR
    from .tokenization import Tokenizer

    tok = Tokenizer.load(PRETRAINED_DIR / "prose" / "tokenizer.json")
    eot = tok.special_tokens["<|endoftext|>"]
    encode = lambda text: torch.tensor([i for para in text.split("\n\n") for i in tok.encode(para) + [eot]])
    return {"train": encode(prose_text("train")), "validation": encode(prose_text("validation")),
            "vocab_size": tok.vocab_size, "eot": eot}


def _validation_batches(ids: torch.Tensor, block_size: int, per_batch: int = 50) -> list[dict[str, torch.Tensor]]:
    """The whole validation stream as non-overlapping windows ``(per_batch, block_size)``, the last
    incomplete batch dropped, so every batch has the same weight in the mean."""
    windows = ids[: len(ids) // block_size * block_size].view(-1, block_size)  # (W, T)
    windows = windows[: len(windows) // per_batch * per_batch]
    return [{"input_ids": w, "labels": w.clone()} for w in windows.split(per_batch)]


def run_point(n_layer: int, n_embd: int, n_head: int, budget: float, settings: SweepSettings | None = None,
              data: dict[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Train one size at one budget and score it: a row of the sweep's table.

    The model is a GPT-2-style :class:`~course_utils.transformer.DecoderOnlyLM`
    (no dropout); ``N`` counts all its
    parameters (the tied token embedding once, the position table too). It
    trains for ``round(budget / (6 N) / tokens_per_step)`` steps (at least one),
    so ``D`` is whole steps and ``6 N D`` is within half a step of ``budget``.
    The loss is the mean over the whole validation split (:func:`_validation_batches`).
    """
    from .data import random_batch
    from .device import seed_everything
    from .training import TrainConfig, evaluate, train
    from .transformer import DecoderOnlyLM, TransformerConfig

    s = settings or SweepSettings()
    check_int("n_layer", n_layer, minimum=1)
    check_int("n_embd", n_embd, minimum=1)
    check_int("n_head", n_head, minimum=1)
    check_number("budget", budget, low=0, low_open=True)
    data = data or sweep_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        seed_everything(s.seed)
        config = TransformerConfig(vocab_size=data["vocab_size"], block_size=s.block_size, n_layer=n_layer,
                                   n_head=n_head, n_embd=n_embd, activation="gelu_tanh",
                                   pad_token_id=data["eot"])
        model = DecoderOnlyLM(config)
        n = model.num_parameters()
        per_step = s.block_size * s.batch_size
        steps = max(1, round(budget / (6 * n) / per_step))
        tc = TrainConfig(max_steps=steps, lr=s.lr, warmup_steps=max(1, round(s.warmup_fraction * steps)),
                         weight_decay=s.weight_decay, eval_every=steps, log_every=max(1, steps // 10), seed=s.seed,
                         device="cpu", progress=progress, desc=f"{n_layer}x{n_embd} @ {budget:.2g}")
        train_ids = data["train"]
        get_batch = lambda split="train", generator=None: random_batch(train_ids, s.block_size, s.batch_size,
                                                                       generator=generator)
        start = time.perf_counter()
        history = train(model, get_batch, tc)
        seconds = time.perf_counter() - start
        loss, _ = evaluate(model, _validation_batches(data["validation"], s.block_size))
    finally:
        torch.set_num_threads(threads)
    d = steps * per_step
    return {"budget": budget, "n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, "n_params": n, "steps": steps, "tokens": d,
            "flops": training_flops(n, d), "epochs": round(d / len(train_ids), 3),
            "train_loss": round(history.train_loss[-1], 4), "val_loss": round(loss, 4),
            "seconds": round(seconds, 1)}


def sweep(settings: SweepSettings | None = None, out: str | Path | None = SWEEP_PATH,
          progress: bool = True) -> dict[str, Any]:
    """Run every (size, budget) point of ``settings``, cheapest budget first, and write the table
    (a dict: metadata and ``rows``) as JSON to ``out`` (None: do not write). Returns the table."""
    from tqdm.auto import tqdm

    s = settings or SweepSettings()
    start = time.perf_counter()
    data = sweep_data()
    points = [(size, c) for c in sorted(s.budgets) for size in s.sizes]
    rows = []
    bar = tqdm(points, desc="scaling sweep", disable=not progress)
    for (layers, width, heads), c in bar:
        bar.set_postfix_str(f"{layers} layers x {width} @ {c:.2g} FLOPs")
        rows.append(run_point(layers, width, heads, c, s, data))
    table = {
        "description": "Final validation loss of the course's decoder on the prose corpus, "
                       "one run per (size, compute budget), for chapter 11",
        "command": SWEEP_COMMAND,
        "settings": s.to_dict(),
        "data": {"source": "course_utils.data.prose_text, encoded with the shipped prose model's tokenizer",
                 "train_tokens": len(data["train"]), "validation_tokens": len(data["validation"]),
                 "vocab_size": data["vocab_size"]},
        "columns": {"budget": "target compute, FLOPs", "n_params": "N, all parameters",
                    "tokens": "D, training tokens (whole steps)", "flops": "6 N D", "epochs": "D / train_tokens",
                    "train_loss": "mean training loss of the last tenth of the steps",
                    "val_loss": "mean loss on the whole validation split", "seconds": "training time"},
        "trained_on": f"{platform.machine()} CPU, {s.threads} thread(s), torch {torch.__version__}",
        "sweep_seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(table, indent=1) + "\n")
    return table


def load_sweep(path: str | Path | None = None) -> dict[str, Any]:
    """The sweep's table (default: the one shipped in the package), with its settings as a
    :class:`SweepSettings` under ``"sweep_settings"``."""
    table = json.loads(Path(path or SWEEP_PATH).read_text())
    table["sweep_settings"] = SweepSettings.from_dict(table["settings"])
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m course_utils.scaling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sw = sub.add_parser("sweep", help="re-make the table")
    sw.add_argument("--out", default=str(SWEEP_PATH), help="where to write the table (default: the package's)")
    sw.add_argument("--no-progress", action="store_true")
    pt = sub.add_parser("point", help="re-run one point of the shipped table and compare")
    pt.add_argument("n_layer", type=int)
    pt.add_argument("n_embd", type=int)
    pt.add_argument("n_head", type=int)
    pt.add_argument("budget", type=float)
    args = ap.parse_args(argv)
    if args.command == "sweep":
        table = sweep(out=args.out, progress=not args.no_progress)
        print(f"{len(table['rows'])} runs in {table['sweep_seconds']:.0f} s, written to {args.out}")
        return 0
    table = load_sweep()
    point = (args.n_layer, args.n_embd, args.n_head, args.budget)
    shipped = [r for r in table["rows"] if (r["n_layer"], r["n_embd"], r["n_head"], r["budget"]) == point]
    if not shipped:
        ap.error(f"no point {point} in the shipped table")
    row = run_point(*point, table["sweep_settings"], progress=True)
    print(f"validation loss: table {shipped[0]['val_loss']:.4f}, now {row['val_loss']:.4f} "
          f"({row['val_loss'] - shipped[0]['val_loss']:+.4f} nats, {row['seconds']:.0f} s of training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
