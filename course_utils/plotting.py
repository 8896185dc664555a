"""The figures of the book, one small function per figure.

Every function takes torch tensors or numpy arrays, checks their shapes, and
returns a ``matplotlib.figure.Figure``. Figures are built with the
object-oriented API on a standalone ``Figure`` (not through ``pyplot``), so
nothing is shown or kept open behind your back: in a notebook the returned
figure displays once as the cell's value; elsewhere call ``fig.savefig(...)``.
``plt.show()`` is never called.

Following d2l and "LLMs from scratch", the book's figures come from small
tested functions rather than code pasted into chapters. PCA is the textbook
one (center, then SVD: Pearson 1901; Hotelling 1933). Top-k and top-p follow
Hugging Face ``generate``: top-k keeps every token tied with the k-th, top-p
(Holtzman et al., 2020) runs after top-k on the renormalized distribution and
keeps the smallest set of most likely tokens whose probability reaches p.

Why one file of this size: it is a catalogue of small independent figure
functions with one shared style; a reader looks up one function, never reads
the file in one go, and one module keeps the style in one place.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from .checks import check_int, check_number, check_one_of

if TYPE_CHECKING:  # matplotlib is imported inside the functions
    from matplotlib.figure import Figure

__all__ = [
    "pca_project",
    "plot_attention",
    "plot_attention_heads",
    "plot_embeddings",
    "plot_next_token_probs",
    "plot_temperature",
    "plot_training_curves",
    "plot_memory_breakdown",
    "plot_quantization_error",
    "plot_positional_encoding",
    "plot_accuracy_vs_shots",
    "plot_recall_race",
]

KEPT_COLOR, DROPPED_COLOR = "tab:blue", "lightgray"


# ---------------------------------------------------------------------------
# Input checks shared by every figure
# ---------------------------------------------------------------------------


def _array(x: Any, name: str, ndim: int | None, expected: str) -> np.ndarray:
    """A float64 numpy copy of a tensor, array or list, with ``ndim`` dimensions
    (any number if ``ndim`` is None).

    Example: ``_array(torch.ones(2, 3), "w", 2, "(T_q, T_k)").shape == (2, 3)``.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}") from err
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have shape {expected}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must contain only finite values, got inf or nan")
    return arr


def _tokens(tokens: Any, name: str, n: int, matches: str) -> list[str]:
    """Tokens as strings; there must be exactly ``n`` of them."""
    if isinstance(tokens, str) or not isinstance(tokens, (Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a list of tokens, got {type(tokens).__name__}")
    tokens = [str(t.item() if isinstance(t, torch.Tensor) else t) for t in tokens]
    if len(tokens) != n:
        raise ValueError(f"{name} must have {n} entries to match {matches}, got {len(tokens)}")
    return tokens


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(min(width, 16.0), min(height, 16.0)), layout="constrained")


def _heatmap(ax, values: np.ndarray, rows: list[str] | None, cols: list[str] | None, **kwargs):
    """Draw values (R, C) with token tick labels; returns the image."""
    image = ax.imshow(values, **kwargs)
    if cols is not None:
        ax.set_xticks(range(len(cols)), cols, rotation=90)
    if rows is not None:
        ax.set_yticks(range(len(rows)), rows)
    return image


def _label_heatmap(fig: "Figure", ax, image, label: str, xlabel: str, ylabel: str, title: str) -> "Figure":
    """Colour bar (labelled ``label``), axis labels and title of a one-panel heatmap; returns ``fig``."""
    fig.colorbar(image, ax=ax, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------


def plot_attention(
    weights: Any, tokens_q: Sequence[str], tokens_k: Sequence[str] | None = None, title: str | None = None
) -> "Figure":
    """Heatmap of one attention matrix: row i shows where query token i looks.

    weights: (T_q, T_k), each row a probability distribution. tokens_k
    defaults to tokens_q (self-attention).
    Example: ``plot_attention(torch.eye(3), ["a", "b", "c"])``.
    """
    w = _array(weights, "weights", 2, "(T_q, T_k)")
    t_q, t_k = w.shape
    rows = _tokens(tokens_q, "tokens_q", t_q, f"weights.shape[0] = {t_q}")
    cols = _tokens(tokens_q if tokens_k is None else tokens_k, "tokens_k", t_k, f"weights.shape[1] = {t_k}")
    fig = _figure(max(4.5, 2.5 + 0.35 * t_k), max(3.8, 1.5 + 0.35 * t_q))
    ax = fig.subplots()
    image = _heatmap(ax, w, rows, cols, cmap="viridis", vmin=0.0, vmax=max(w.max(), 1e-12))
    return _label_heatmap(fig, ax, image, "attention weight", "key (attended to)", "query (attending)",
                          title or "Attention weights")


def plot_attention_heads(
    weights: Any,
    tokens: Sequence[str],
    ncols: int = 4,
    tokens_k: Sequence[str] | None = None,
    title: str | None = None,
) -> "Figure":
    """Every head of one layer side by side, on one shared color scale.

    weights: (H, T_q, T_k); tokens label the queries (and the keys unless
    tokens_k is given). Grid of ceil(H / ncols) rows; unused cells removed.
    Example: ``plot_attention_heads(torch.rand(8, 5, 5).softmax(-1), list("abcde"))``.
    """
    w = _array(weights, "weights", 3, "(H, T_q, T_k)")
    n_head, t_q, t_k = w.shape
    rows = _tokens(tokens, "tokens", t_q, f"weights.shape[1] = {t_q}")
    cols = _tokens(tokens if tokens_k is None else tokens_k, "tokens_k", t_k, f"weights.shape[2] = {t_k}")
    ncols = min(check_int("ncols", ncols, minimum=1), n_head)
    nrows = math.ceil(n_head / ncols)
    fig = _figure(1.0 + ncols * (1.0 + 0.3 * t_k), 0.8 + nrows * (1.0 + 0.3 * t_q))
    grid = fig.subplots(nrows, ncols, squeeze=False)
    used = []
    for h, ax in enumerate(grid.flat):
        if h >= n_head:
            ax.remove()  # an empty cell of the grid
            continue
        image = _heatmap(ax, w[h], rows, cols, cmap="viridis", vmin=0.0, vmax=max(w.max(), 1e-12))
        ax.set_title(f"head {h}")
        used.append(ax)
    fig.colorbar(image, ax=used, label="attention weight")
    fig.suptitle(title or f"{n_head} attention heads")
    return fig


# ---------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------


def pca_project(vectors: Any, dim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, D) vectors on their first ``dim`` principal components.

    Center the rows, take the SVD ``Xc = U S V^T``; the coordinates are
    ``Xc @ V[:, :dim]`` and component i explains ``S_i^2 / sum(S^2)`` of the
    variance. Each component's sign is fixed so its largest loading is positive.
    Returns (coords (N, dim), explained_variance_ratio (dim,)).
    Example: points on a line ``t * v`` project to ``(±|v| t, 0)``.
    """
    x = _array(vectors, "vectors", 2, "(N, D)")
    dim = check_int("dim", dim, minimum=1)
    if min(x.shape) < dim:
        raise ValueError(f"vectors must have at least {dim} rows and columns for dim={dim}, got shape {x.shape}")
    xc = torch.from_numpy(x - x.mean(axis=0))  # (N, D), centered
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)  # vh: (min(N, D), D)
    components = vh[:dim]  # (dim, D)
    largest = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(dim), largest])
    components = components * signs[:, None]
    coords = (xc @ components.T).numpy()  # (N, dim)
    total = float((s**2).sum())
    explained = (s[:dim] ** 2 / total).numpy() if total > 0 else np.zeros(dim)
    return coords, explained


def plot_embeddings(
    vectors: Any, labels: Sequence[str] | None, dim: int = 2, title: str | None = None
) -> "Figure":
    """Embedding vectors (N, D) projected by PCA to 2 or 3 dimensions, labelled.

    Example: ``plot_embeddings(model.wte.weight[:20], tokenizer_tokens[:20])``.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    coords, explained = pca_project(vectors, dim)
    names = None if labels is None else _tokens(labels, "labels", len(coords), f"vectors.shape[0] = {len(coords)}")
    fig = _figure(6.0, 5.0)
    if dim == 2:
        ax = fig.subplots()
        ax.scatter(coords[:, 0], coords[:, 1])
        for name, (x, y) in zip(names or [], coords):
            ax.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points")
    else:
        import mpl_toolkits.mplot3d  # noqa: F401  (registers the "3d" projection)

        ax = fig.add_subplot(projection="3d")
        ax.scatter(coords[:, 0], coords[:, 1], coords[:, 2])
        for name, (x, y, z) in zip(names or [], coords):
            ax.text(x, y, z, name)
        ax.set_zlabel(f"PC3 ({explained[2]:.0%} of variance)")
    ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
    ax.set_title(title or "Embeddings, first principal components")
    return fig


# ---------------------------------------------------------------------------
# Next-token distributions
# ---------------------------------------------------------------------------


def _kept_by_top_k_top_p(sorted_probs: np.ndarray, top_k: int | None, top_p: float | None) -> tuple[int, int]:
    """How many of the sorted (descending) tokens top-k, then top-k + top-p keep.

    Example: probs [.5, .3, .1, .1], top_k 3, top_p .8 -> (3, 2).
    """
    keep = np.ones(len(sorted_probs), dtype=bool)
    if top_k is not None:
        keep &= sorted_probs >= sorted_probs[min(top_k, len(sorted_probs)) - 1]  # ties stay
    n_top_k = int(keep.sum())
    if top_p is not None:
        renormalized = np.where(keep, sorted_probs, 0.0) / sorted_probs[keep].sum()
        tail = np.cumsum(renormalized[::-1])[::-1]  # mass of this token and all less likely ones
        keep &= tail > 1.0 - top_p  # drop the least likely tokens holding at most 1 - p
        keep[0] = True  # always keep the most likely token
    return n_top_k, int(keep.sum())


def plot_next_token_probs(
    probs: Any,
    tokens: Sequence[str],
    top_k: int | None = None,
    top_p: float | None = None,
    n: int = 20,
    title: str | None = None,
) -> "Figure":
    """Bars of the ``n`` most likely next tokens, kept vs dropped by top-k/top-p.

    probs: (V,) a probability distribution; tokens: V strings. Kept bars are
    blue, dropped ones gray; a vertical line marks each cut-off that falls
    among the shown bars (top-k first, then top-p, as in Hugging Face).
    Example: ``plot_next_token_probs(logits.softmax(-1), vocab, top_k=5, top_p=0.9)``.
    """
    p = _array(probs, "probs", 1, "(V,)")
    if (p < 0).any() or abs(p.sum() - 1.0) > 1e-3:
        raise ValueError(f"probs must be non-negative and sum to 1, got sum {p.sum():.6g}, min {p.min():.6g}")
    names = _tokens(tokens, "tokens", len(p), f"probs.shape[0] = {len(p)}")
    if top_k is not None:
        top_k = check_int("top_k", top_k, minimum=1)
    if top_p is not None:
        check_number("top_p", top_p, 0, 1, low_open=True)
    n = min(check_int("n", n, minimum=1), len(p))

    order = np.argsort(-p, kind="stable")
    n_top_k, n_kept = _kept_by_top_k_top_p(p[order], top_k, top_p)
    shown = order[:n]
    fig = _figure(1.5 + 0.4 * n, 4.0)
    ax = fig.subplots()
    colors = [KEPT_COLOR if i < n_kept else DROPPED_COLOR for i in range(n)]
    ax.bar(range(n), p[shown], color=colors)
    ax.set_xticks(range(n), [names[i] for i in shown], rotation=90)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel(f"next token (the {n} most likely of {len(p)})")
    ax.set_ylabel("probability")
    ax.set_title(title or f"Sampling keeps {n_kept} of {len(p)} tokens")

    if top_k is not None or top_p is not None:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles = [Patch(color=KEPT_COLOR, label="kept"), Patch(color=DROPPED_COLOR, label="dropped")]
        cuts = []
        if top_k is not None:
            cuts.append((n_top_k, f"top-k = {top_k} cut-off", "--", "tab:red"))
        if top_p is not None:
            cuts.append((n_kept, f"top-p = {top_p:g} cut-off", ":", "tab:green"))
        for count, label, style, color in cuts:
            if count < n:  # a cut-off past the last shown bar is not drawn
                ax.axvline(count - 0.5, linestyle=style, color=color, linewidth=2)
                handles.append(Line2D([], [], linestyle=style, color=color, linewidth=2, label=label))
        ax.legend(handles=handles)
    return fig


def plot_temperature(
    logits: Any,
    tokens: Sequence[str],
    temperatures: Sequence[float] = (0.5, 1.0, 2.0),
    n: int = 10,
    title: str | None = None,
) -> "Figure":
    """softmax(logits / T) for several temperatures T, as grouped bars.

    logits: (V,); the ``n`` tokens with the largest logits are shown (the
    order does not depend on T). Low T sharpens, high T flattens.
    Example: ``plot_temperature(torch.tensor([2.0, 1.0, 0.0]), ["a", "b", "c"])``.
    """
    z = _array(logits, "logits", 1, "(V,)")
    names = _tokens(tokens, "tokens", len(z), f"logits.shape[0] = {len(z)}")
    temperatures = list(temperatures)
    if not temperatures:
        raise ValueError("temperatures must be a non-empty list of positive numbers, got an empty one")
    for i, t in enumerate(temperatures):
        check_number(f"temperatures[{i}]", t, low=0, low_open=True)
    n = min(check_int("n", n, minimum=1), len(z))
    shown = np.argsort(-z, kind="stable")[:n]
    width = 0.8 / len(temperatures)
    fig = _figure(2.0 + 0.5 * n * max(1.0, len(temperatures) / 3), 4.0)
    ax = fig.subplots()
    for j, t in enumerate(temperatures):
        scaled = z / t
        p = np.exp(scaled - scaled.max())
        p /= p.sum()  # (V,) softmax over the whole vocabulary
        ax.bar(np.arange(n) + (j - (len(temperatures) - 1) / 2) * width, p[shown], width, label=f"T = {t:g}")
    ax.set_xticks(range(n), [names[i] for i in shown], rotation=90)
    ax.set_xlabel("next token")
    ax.set_ylabel("probability")
    ax.legend()
    ax.set_title(title or "Temperature reshapes the next-token distribution")
    return fig


# ---------------------------------------------------------------------------
# Training, memory, quantization, positions, in-context learning
# ---------------------------------------------------------------------------


def _history_columns(history: Any) -> dict[str, list]:
    """Dict of columns from a dict of lists or a list of per-step records."""
    if hasattr(history, "as_dict"):  # course_utils.training.History
        history = history.as_dict()
    if isinstance(history, Mapping):
        return {k: list(v) for k, v in history.items()}
    if isinstance(history, Sequence) and not isinstance(history, str) and all(isinstance(r, Mapping) for r in history):
        steps = [r.get("step", i) for i, r in enumerate(history)]
        columns: dict[str, list] = {"step": [], "train_loss": [], "val_step": [], "val_loss": []}
        for step, record in zip(steps, history):
            if record.get("train_loss") is not None:
                columns["step"].append(step)
                columns["train_loss"].append(record["train_loss"])
            if record.get("val_loss") is not None:
                columns["val_step"].append(step)
                columns["val_loss"].append(record["val_loss"])
        return columns
    raise TypeError(f"history must be a dict of lists or a list of dicts, got {type(history).__name__}")


def _finite_pairs(x: list, y: list, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Pair steps with values, dropping missing (None or nan) values."""
    if len(x) != len(y):
        raise ValueError(f"history[{y_name!r}] must have one value per history[{x_name!r}] ({len(x)}), got {len(y)}")
    xs = np.array([a for a, b in zip(x, y) if b is not None and not math.isnan(float(b))], dtype=float)
    ys = np.array([float(b) for b in y if b is not None and not math.isnan(float(b))], dtype=float)
    return xs, ys


def plot_training_curves(history: Any, title: str | None = None, logy: bool = False) -> "Figure":
    """Training loss (and validation loss, if any) against the step.

    history: ``{"step": [...], "train_loss": [...], "val_loss": [...],
    "val_step": [...]}`` where "step" defaults to 0, 1, ...; "val_loss" either
    has its own "val_step" (evaluated every few steps) or one entry per step
    with None/nan where it was not measured. A list of per-step dicts
    (``[{"step": 0, "train_loss": 4.1, "val_loss": 4.2}, ...]``) works too, and
    so does a ``course_utils.training.History``.
    Example: ``plot_training_curves({"train_loss": [3.0, 2.5, 2.2]})``.
    """
    columns = _history_columns(history)
    if not columns.get("train_loss"):
        raise ValueError(f"history must hold a non-empty 'train_loss', got keys {sorted(columns)}")
    steps = columns.get("step") or list(range(len(columns["train_loss"])))
    x, y = _finite_pairs(steps, columns["train_loss"], "step", "train_loss")
    fig = _figure(6.5, 4.0)
    ax = fig.subplots()
    ax.plot(x, y, label="train")
    if columns.get("val_loss"):
        step_key = "val_step" if columns.get("val_step") else "step"  # else aligned with the steps
        vx, vy = _finite_pairs(columns.get(step_key) or steps, columns["val_loss"], step_key, "val_loss")
        ax.plot(vx, vy, marker="o", label="validation")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats)")
    ax.legend()
    ax.set_title(title or "Training curves")
    return fig


def _memory_parts(parts: Any, label: str) -> dict[str, float]:
    """{component: bytes} from a mapping or a ``course_utils.memory.MemoryBreakdown``;
    components that are None (not estimated) are left out."""
    if hasattr(parts, "COMPONENTS"):  # a MemoryBreakdown
        parts = {c: getattr(parts, c) for c in parts.COMPONENTS}
    if not isinstance(parts, Mapping):
        raise ValueError(f"rows[{label!r}] must be a mapping component -> bytes, got {type(parts).__name__}")
    out = {}
    for name, value in parts.items():
        if value is None:
            continue
        out[str(name)] = check_number(f"rows[{label!r}][{name!r}]", value, low=0, hint="bytes")
    return out


def plot_memory_breakdown(rows: Any, title: str | None = None) -> "Figure":
    """Stacked bars of memory by component, in GB (10^9 bytes).

    rows: ``{"fp32 inference": {"weights": 4e9}, "fp32 training":
    {"weights": 4e9, "gradients": 4e9, "optimizer": 8e9}}``; a component a
    row lacks (or holds as None) counts as 0. Values may also be
    ``course_utils.memory.MemoryBreakdown`` objects, and rows may be a list of
    them (labelled by their ``label``). The total is written above each bar.
    """
    if isinstance(rows, Sequence) and not isinstance(rows, str):
        rows = {getattr(r, "label", "") or f"setup {i}": r for i, r in enumerate(rows)}
    if not isinstance(rows, Mapping) or not rows:
        raise ValueError(f"rows must be a non-empty mapping label -> {{component: bytes}}, got {rows!r}")
    table = {str(label): _memory_parts(parts, label) for label, parts in rows.items()}
    components: list[str] = []
    for parts in table.values():
        components += [name for name in parts if name not in components]
    labels = list(table)
    fig = _figure(2.0 + 1.2 * len(labels), 4.5)
    ax = fig.subplots()
    bottom = np.zeros(len(labels))
    for name in components:
        gb = np.array([table[label].get(name, 0.0) / 1e9 for label in labels])
        ax.bar(range(len(labels)), gb, bottom=bottom, label=name.replace("_", " "))
        bottom += gb
    for i, total in enumerate(bottom):
        ax.text(i, total, f"{total:.3g} GB", ha="center", va="bottom")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylabel("memory (GB)")
    ax.legend()
    ax.set_title(title or "Memory by component")
    return fig


def plot_quantization_error(x: Any, x_hat: Any, bins: int = 50, title: str | None = None) -> "Figure":
    """Histogram of the element-wise error ``x_hat - x`` of a quantized tensor.

    x and x_hat must have the same shape (any number of dimensions).
    Example: ``q, s = absmax_quantize(w); plot_quantization_error(w, q * s)``.
    """
    ref = _array(x, "x", None, "any")
    approx = _array(x_hat, "x_hat", None, "any")
    if approx.shape != ref.shape:
        raise ValueError(f"x_hat must have the shape of x {ref.shape}, got shape {approx.shape}")
    bins = check_int("bins", bins, minimum=1)
    err = (approx - ref).ravel()
    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    ax.hist(err, bins=bins, color="tab:purple")
    ax.set_xlabel("error (x_hat - x)")
    ax.set_ylabel("count")
    rms = float(np.sqrt(np.mean(err**2)))
    ax.set_title(title or f"Quantization error: max |e| = {np.abs(err).max():.3g}, RMS = {rms:.3g}")
    return fig


def plot_positional_encoding(pe: Any, title: str | None = None) -> "Figure":
    """Heatmap of a positional encoding matrix, position against dimension.

    pe: (T, D), e.g. the sinusoidal table or a learned ``wpe.weight``.
    """
    values = _array(pe, "pe", 2, "(T, D)")
    fig = _figure(7.0, 4.5)
    ax = fig.subplots()
    bound = max(np.abs(values).max(), 1e-12)
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    return _label_heatmap(fig, ax, image, "value", "embedding dimension", "position", title or "Positional encoding")


def plot_accuracy_vs_shots(
    shots: Any, accuracy: Any, chance: float | None = None, title: str | None = None
) -> "Figure":
    """Accuracy (y in [0, 1]) against the number of in-context examples.

    accuracy: one value per entry of shots, or a mapping name -> such values
    to compare several models. ``chance`` draws the guessing level.
    Example: ``plot_accuracy_vs_shots([0, 1, 2], [0.2, 0.9, 0.98], chance=0.05)``.
    """
    x = _array(shots, "shots", 1, "(K,)")
    series = dict(accuracy) if isinstance(accuracy, Mapping) else {"accuracy": accuracy}
    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    for name, values in series.items():
        y = _array(values, f"accuracy[{name!r}]" if isinstance(accuracy, Mapping) else "accuracy", 1, f"({len(x)},)")
        if y.shape != x.shape:
            raise ValueError(f"accuracy must have one value per shot, shape {x.shape}, got shape {y.shape}")
        if ((y < 0) | (y > 1)).any():
            raise ValueError(f"accuracy must lie in [0, 1], got values from {y.min():.3g} to {y.max():.3g}")
        ax.plot(x, y, marker="o", label=str(name), clip_on=False)
    if chance is not None:
        if not isinstance(chance, (int, float)) or not 0 <= chance <= 1:
            raise ValueError(f"chance must be in [0, 1], got {chance!r}")
        ax.axhline(chance, linestyle="--", color="gray", label="chance")
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(x)
    ax.set_xlabel("number of in-context examples (shots)")
    ax.set_ylabel("accuracy")
    ax.legend()
    ax.set_title(title or "Accuracy against the number of shots")
    return fig


def plot_recall_race(results: Any, chance: float, title: str | None = None,
                     baselines: Mapping[str, float] | None = None, x: str | None = None) -> "Figure":
    """Loss against optimizer updates (or training time), and final accuracy, of models in a race.

    ``results``: what :func:`course_utils.rnn.associative_recall_experiment`
    returns, ``{name: {"accuracy": a, "params": n, "loss_curve": {"step": [...],
    "time": [...], "loss": [...]}}}``; a result that also holds ``"seconds"``
    gets its training time in the legend, beside its parameter count.
    ``x``: the loss panel's horizontal axis, ``"step"`` (updates: the same on
    any machine) or ``"time"`` (seconds: depends on the machine); ``None``
    means ``"step"`` when every curve has steps, else ``"time"``.
    ``chance``: the accuracy of guessing (0 < chance < 1),
    drawn as a dotted line in both panels (as the loss ``-log(chance)`` on the left).
    ``baselines``: more reference accuracies, ``{label: accuracy}``, drawn
    dashed the same way (for recall, ``{"guess among the values present": 1 / n_pairs}``).
    The loss axis stops at twice the loss of guessing, so a large first loss
    (a model that starts sure of wrong answers) does not flatten the rest.
    Example: ``plot_recall_race(associative_recall_experiment(max_steps=500), chance=1 / 32)``.
    """
    import textwrap

    if not isinstance(results, dict) or not results:
        raise ValueError(f"results must be a non-empty dict of name -> result, got {type(results).__name__}")
    for name, r in results.items():
        if not isinstance(r, dict) or not {"accuracy", "params", "loss_curve"} <= set(r):
            raise ValueError(f"results[{name!r}] must hold 'accuracy', 'params' and 'loss_curve'")
    if x is None:
        x = "step" if all("step" in r["loss_curve"] for r in results.values()) else "time"
    check_one_of("x", x, ("step", "time"))
    missing = [name for name, r in results.items() if x not in r["loss_curve"]]
    if missing:
        raise ValueError(f"x={x!r} needs loss_curve[{x!r}] in every result, missing in {missing}")
    levels = {"chance": chance, **dict(baselines or {})}
    for label, level in levels.items():
        check_number("chance" if label == "chance" else f"baselines[{label!r}]", level, 0, 1,
                     low_open=True, high_open=True)
    fig = _figure(10.0, 3.8)
    ax_loss, ax_acc = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    names = list(results)
    top = 0.0
    for i, name in enumerate(names):
        curve = results[name]["loss_curve"]
        xs, y = _finite_pairs(list(curve[x]), list(curve["loss"]), x, "loss")
        top = max([top, *y])
        seconds = f", {results[name]['seconds']:.0f} s" if "seconds" in results[name] else ""
        ax_loss.plot(xs, y, color=f"C{i}", label=f"{name} ({results[name]['params']:,} parameters{seconds})")
    for j, (label, level) in enumerate(levels.items()):
        style = ":" if label == "chance" else "--"
        ax_loss.axhline(-np.log(level), color="gray", linestyle=style, alpha=1.0 - 0.3 * j,
                        label="loss of guessing" if label == "chance" else f"loss: {label}")
        ax_acc.axhline(100 * level, color="gray", linestyle=style, alpha=1.0 - 0.3 * j, label=label)
    ax_loss.set_ylim(0, min(1.05 * max(top, -np.log(chance)), -2 * np.log(chance)))
    ax_loss.set_xlabel("optimizer updates" if x == "step" else "training time (s)")
    ax_loss.set_ylabel("loss on the scored tokens (nats)")
    ax_loss.set_title(title or ("Loss against updates" if x == "step" else "Loss against training time"))
    ax_loss.legend(fontsize=8)
    bars = ax_acc.bar(range(len(names)), [100 * results[n]["accuracy"] for n in names],
                      color=[f"C{i}" for i in range(len(names))])
    ax_acc.set_xticks(range(len(names)), [textwrap.fill(n, 14) for n in names], fontsize=8)
    ax_acc.bar_label(bars, fmt="%.1f%%")
    ax_acc.set_ylim(0, 110)
    ax_acc.set_ylabel("held-out accuracy (%)")
    ax_acc.set_title("Accuracy after training")
    ax_acc.legend(fontsize=8)
    return fig
