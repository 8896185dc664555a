"""Tests for course_utils.plotting: every figure is rendered to PNG and its
content (axes, tick labels, bars, legend, colorbar, data) is checked.

References: numpy's SVD for PCA, torch.softmax for temperature, and Hugging
Face's TopKLogitsWarper/TopPLogitsWarper for the kept tokens.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_utils.plotting import (  # noqa: E402
    plot_recall_race,
    pca_project,
    plot_accuracy_vs_shots,
    plot_attention,
    plot_attention_heads,
    plot_embeddings,
    plot_memory_breakdown,
    plot_next_token_probs,
    plot_positional_encoding,
    plot_quantization_error,
    plot_temperature,
    plot_training_curves,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def render(fig) -> bytes:
    """PNG bytes of the figure; also checks the figure type."""
    assert isinstance(fig, Figure)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)  # small: the content is checked, not the pixels
    data = buffer.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 500
    plt.close(fig)
    return data


def texts(labels) -> list[str]:
    return [t.get_text() for t in labels]


def legend_texts(ax) -> list[str]:
    return texts(ax.get_legend().get_texts())


# --------------------------------------------------------------------------- attention


def test_plot_attention_square_and_rectangular():
    tokens = ["The", "cat", "sat", "down"]
    weights = torch.rand(4, 4, generator=torch.Generator().manual_seed(0)).softmax(-1)
    fig = plot_attention(weights, tokens, title="layer 0")
    main, colorbar = fig.axes  # the heatmap and its colorbar
    assert texts(main.get_xticklabels()) == tokens
    assert texts(main.get_yticklabels()) == tokens
    assert main.get_xlabel() and main.get_ylabel() and main.get_title() == "layer 0"
    assert np.allclose(main.images[0].get_array(), weights.numpy())
    assert colorbar.get_ylabel() == "attention weight"
    render(fig)

    cross = np.full((2, 3), 1 / 3)  # numpy input, 2 queries over 3 keys
    fig = plot_attention(cross, ["a", "b"], ["x", "y", "z"])
    assert texts(fig.axes[0].get_xticklabels()) == ["x", "y", "z"]
    assert texts(fig.axes[0].get_yticklabels()) == ["a", "b"]
    render(fig)


def test_plot_attention_bad_shapes():
    with pytest.raises(ValueError, match=r"tokens_q must have 4 entries.*got 3"):
        plot_attention(torch.rand(4, 4), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"tokens_k must have 3 entries"):
        plot_attention(torch.rand(2, 3), ["a", "b"])  # not square: tokens_k needed
    with pytest.raises(ValueError, match=r"weights must have shape \(T_q, T_k\), got shape \(4,\)"):
        plot_attention(torch.rand(4), list("abcd"))
    with pytest.raises(TypeError, match="tokens_q"):
        plot_attention(torch.rand(4, 4), "abcd")


def test_plot_attention_heads_grid():
    tokens = list("abcde")
    weights = torch.rand(6, 5, 5, generator=torch.Generator().manual_seed(1)).softmax(-1)
    fig = plot_attention_heads(weights, tokens, ncols=4)
    heads = [ax for ax in fig.axes if ax.get_title().startswith("head")]
    assert len(heads) == 6 and len(fig.axes) == 7  # 6 heads + 1 shared colorbar (2 cells removed)
    for h, ax in enumerate(heads):
        assert ax.get_title() == f"head {h}"
        assert np.allclose(ax.images[0].get_array(), weights[h].numpy())
        assert texts(ax.get_xticklabels()) == tokens
        assert ax.images[0].get_clim() == heads[0].images[0].get_clim()  # one color scale
    render(fig)
    with pytest.raises(ValueError, match=r"\(H, T_q, T_k\)"):
        plot_attention_heads(torch.rand(5, 5), tokens)
    with pytest.raises(ValueError, match="ncols"):
        plot_attention_heads(weights, tokens, ncols=0)
    with pytest.raises(ValueError, match="tokens must have 5 entries"):
        plot_attention_heads(weights, tokens[:4])


# --------------------------------------------------------------------------- embeddings


def _planted(n: int = 60, d: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    t = rng.normal(scale=3.0, size=n)  # strong signal along one direction
    x = t[:, None] * direction + 0.1 * rng.normal(size=(n, d)) + 5.0  # offset: PCA must center
    return x, t


def test_pca_matches_svd_reference_and_finds_planted_direction():
    x, t = _planted()
    coords, explained = pca_project(torch.from_numpy(x), dim=3)
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    reference = u[:, :3] * s[:3]
    for i in range(3):  # equal up to the sign of each component
        assert np.allclose(np.abs(coords[:, i]), np.abs(reference[:, i]), atol=1e-8)
    assert np.allclose(explained, s[:3] ** 2 / np.sum(s**2))
    assert abs(np.corrcoef(coords[:, 0], t)[0, 1]) > 0.99


def test_plot_embeddings_2d():
    x, t = _planted()
    labels = [f"w{i}" for i in range(len(x))]
    fig = plot_embeddings(x, labels)
    (ax,) = fig.axes
    offsets = np.asarray(ax.collections[0].get_offsets())
    assert offsets.shape == (len(x), 2)
    assert abs(np.corrcoef(offsets[:, 0], t)[0, 1]) > 0.99
    assert texts(ax.texts) == labels
    assert ax.get_xlabel().startswith("PC1") and ax.get_ylabel().startswith("PC2")
    render(fig)


def test_plot_embeddings_3d():
    x, _ = _planted()
    labels = [f"w{i}" for i in range(len(x))]
    fig = plot_embeddings(torch.from_numpy(x).float(), labels, dim=3)
    (ax,) = fig.axes
    assert ax.name == "3d"
    assert texts(ax.texts) == labels
    assert ax.get_zlabel().startswith("PC3")
    render(fig)


def test_plot_embeddings_bad_input():
    x, _ = _planted(n=5)
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        plot_embeddings(x, list("abcde"), dim=4)
    with pytest.raises(ValueError, match="labels must have 5 entries"):
        plot_embeddings(x, list("abc"))
    with pytest.raises(ValueError, match=r"vectors must have shape \(N, D\)"):
        plot_embeddings(x[0], list("abcde"))
    with pytest.raises(ValueError, match="at least 3 rows"):
        pca_project(x[:2], dim=3)


# --------------------------------------------------------------------------- next token


def _hf_kept(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> set[int]:
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    scores = logits[None].clone()
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p is not None:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return set(torch.nonzero(torch.isfinite(scores[0])).flatten().tolist())


@pytest.mark.parametrize("top_k,top_p", [(8, None), (None, 0.6), (8, 0.6), (3, 0.99), (None, None)])
def test_plot_next_token_probs_kept_tokens_match_hugging_face(top_k, top_p):
    logits = torch.randn(30, generator=torch.Generator().manual_seed(3)) * 2
    probs = logits.softmax(-1)
    tokens = [f"tok{i}" for i in range(30)]
    fig = plot_next_token_probs(probs, tokens, top_k=top_k, top_p=top_p, n=30)
    (ax,) = fig.axes
    assert len(ax.patches) == 30
    shown = texts(ax.get_xticklabels())
    assert shown == [tokens[i] for i in torch.argsort(probs, descending=True).tolist()]
    heights = [p.get_height() for p in ax.patches]
    assert heights == sorted(heights, reverse=True)
    kept = {shown[i] for i, p in enumerate(ax.patches) if p.get_facecolor() == to_rgba("tab:blue")}
    assert kept == {tokens[i] for i in _hf_kept(logits, top_k, top_p)}
    assert ax.get_ylabel() == "probability"
    if top_k is None and top_p is None:
        assert ax.get_legend() is None
    else:
        assert legend_texts(ax)[:2] == ["kept", "dropped"]
    render(fig)


def test_plot_next_token_probs_hand_example_with_ties():
    probs = [0.1, 0.4, 0.2, 0.2, 0.1]
    tokens = ["e", "a", "b", "c", "d"]
    # top-k 2 keeps the tie at 0.2 (3 tokens); top-p 0.55 then keeps a (0.4/0.8) and one 0.2
    fig = plot_next_token_probs(probs, tokens, top_k=2, top_p=0.55, n=4)
    (ax,) = fig.axes
    assert len(ax.patches) == 4
    assert texts(ax.get_xticklabels()) == ["a", "b", "c", "e"]
    colors = [p.get_facecolor() for p in ax.patches]
    assert colors == [to_rgba("tab:blue")] * 2 + [to_rgba("lightgray")] * 2
    assert legend_texts(ax) == ["kept", "dropped", "top-k = 2 cut-off", "top-p = 0.55 cut-off"]
    cut_x = sorted(line.get_xdata()[0] for line in ax.lines)
    assert cut_x == [1.5, 2.5]  # top-p after 2 bars, top-k after 3
    render(fig)


def test_plot_next_token_probs_bad_input():
    probs = torch.tensor([0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\], got 1.5"):
        plot_next_token_probs(probs, list("abc"), top_p=1.5)
    with pytest.raises(ValueError, match="top_k must be an int >= 1, got 0"):
        plot_next_token_probs(probs, list("abc"), top_k=0)
    with pytest.raises(TypeError, match="top_k must be an int, got float"):
        plot_next_token_probs(probs, list("abc"), top_k=2.0)
    with pytest.raises(ValueError, match="sum to 1"):
        plot_next_token_probs(torch.tensor([0.5, 0.6, 0.1]), list("abc"))
    with pytest.raises(ValueError, match="tokens must have 3 entries"):
        plot_next_token_probs(probs, list("ab"))


def test_plot_temperature():
    logits = torch.tensor([1.0, 3.0, -1.0, 2.0, 0.0])
    tokens = ["a", "b", "c", "d", "e"]
    fig = plot_temperature(logits, tokens, temperatures=(0.5, 1, 2), n=4)
    (ax,) = fig.axes
    assert len(ax.patches) == 4 * 3
    assert legend_texts(ax) == ["T = 0.5", "T = 1", "T = 2"]
    assert texts(ax.get_xticklabels()) == ["b", "d", "a", "e"]
    for j, t in enumerate((0.5, 1.0, 2.0)):
        expected = torch.softmax(logits / t, dim=-1)[[1, 3, 0, 4]]
        heights = [p.get_height() for p in ax.patches[4 * j : 4 * (j + 1)]]
        assert np.allclose(heights, expected.numpy(), atol=1e-6)
    render(fig)
    with pytest.raises(ValueError, match="temperatures"):
        plot_temperature(logits, tokens, temperatures=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"logits must have shape \(V,\)"):
        plot_temperature(logits[None], tokens)


# --------------------------------------------------------------------------- training etc.


def test_plot_training_curves_with_coarser_validation():
    history = {
        "step": list(range(0, 100, 10)),
        "train_loss": [4.0 - 0.3 * i for i in range(10)],
        "val_step": [0, 50, 90],
        "val_loss": [4.1, 2.8, 1.6],
    }
    fig = plot_training_curves(history)
    (ax,) = fig.axes
    train, val = ax.lines
    assert list(train.get_xdata()) == history["step"]
    assert np.allclose(train.get_ydata(), history["train_loss"])
    assert list(val.get_xdata()) == [0, 50, 90] and list(val.get_ydata()) == [4.1, 2.8, 1.6]
    assert legend_texts(ax) == ["train", "validation"]
    assert ax.get_xlabel() == "step" and "loss" in ax.get_ylabel()
    render(fig)


def test_plot_training_curves_records_and_train_only():
    records = [{"step": 0, "train_loss": 3.0, "val_loss": 3.1}, {"step": 5, "train_loss": 2.0},
               {"step": 10, "train_loss": 1.5, "val_loss": 1.9}]
    fig = plot_training_curves(records, logy=True)
    (ax,) = fig.axes
    assert list(ax.lines[0].get_xdata()) == [0, 5, 10]
    assert list(ax.lines[1].get_xdata()) == [0, 10]
    assert ax.get_yscale() == "log"
    render(fig)

    fig = plot_training_curves({"train_loss": torch.tensor([3.0, 2.0, 1.0]).tolist()})
    (ax,) = fig.axes
    assert len(ax.lines) == 1 and list(ax.lines[0].get_xdata()) == [0, 1, 2]
    render(fig)

    with pytest.raises(ValueError, match="val_loss"):
        plot_training_curves({"step": [0, 1, 2], "train_loss": [3, 2, 1], "val_loss": [3, 2]})
    with pytest.raises(ValueError, match="train_loss"):
        plot_training_curves({"step": [0, 1]})


def test_plot_training_curves_accepts_training_history():
    from course_utils.training import History

    history = History(step=[10, 20, 30], train_loss=[3.0, 2.5, 2.0], val_step=[30], val_loss=[2.2])
    fig = plot_training_curves(history)
    (ax,) = fig.axes
    assert list(ax.lines[0].get_xdata()) == [10, 20, 30]
    assert list(ax.lines[1].get_xdata()) == [30] and list(ax.lines[1].get_ydata()) == [2.2]
    render(fig)


def test_plot_memory_breakdown_stacked_gb():
    rows = {
        "inference fp32": {"weights": 4e9},
        "training fp32": {"weights": 4e9, "gradients": 4e9, "optimizer": 8e9, "activations": 8e9},
    }
    fig = plot_memory_breakdown(rows)
    (ax,) = fig.axes
    assert len(ax.patches) == 2 * 4  # one segment per (row, component), missing ones at 0
    assert legend_texts(ax) == ["weights", "gradients", "optimizer", "activations"]
    assert texts(ax.get_xticklabels()) == list(rows)
    assert "GB" in ax.get_ylabel()
    training = [p for p in ax.patches if abs(p.get_x() + p.get_width() / 2 - 1) < 1e-9]
    assert [p.get_height() for p in training] == [4, 4, 8, 8]
    assert [p.get_y() for p in training] == [0, 4, 8, 16]  # stacked
    assert max(p.get_y() + p.get_height() for p in ax.patches) == 24  # 24 GB for 1 B parameters
    render(fig)
    with pytest.raises(ValueError, match=r"rows\['x'\]\['weights'\] must be a finite number >= 0 \(bytes\), got -1"):
        plot_memory_breakdown({"x": {"weights": -1}})
    with pytest.raises(ValueError, match="mapping"):
        plot_memory_breakdown({"x": 3})
    with pytest.raises(ValueError, match="rows"):
        plot_memory_breakdown({})


def test_plot_memory_breakdown_accepts_memory_module_results():
    from course_utils.memory import training_memory

    inference = {"weights": 4e9, "activations": None}  # None: not estimated
    training = training_memory(1e9)
    fig = plot_memory_breakdown({"inference": inference, "training": training})
    (ax,) = fig.axes
    assert texts(ax.get_xticklabels()) == ["inference", "training"]
    top = max(p.get_y() + p.get_height() for p in ax.patches)
    assert top == pytest.approx(training.total / 1e9)
    assert "optimizer states" in legend_texts(ax)
    render(fig)


def test_plot_quantization_error_histogram():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 32))
    x_hat = torch.from_numpy(x + rng.uniform(-0.01, 0.01, size=x.shape))
    fig = plot_quantization_error(x, x_hat, bins=40)
    (ax,) = fig.axes
    assert len(ax.patches) == 40
    assert sum(p.get_height() for p in ax.patches) == x.size
    lo = min(p.get_x() for p in ax.patches)
    hi = max(p.get_x() + p.get_width() for p in ax.patches)
    assert -0.01 <= lo and hi <= 0.01
    assert ax.get_xlabel() and ax.get_ylabel() == "count"
    render(fig)
    with pytest.raises(ValueError, match=r"x_hat must have the shape of x \(64, 32\), got shape \(32, 64\)"):
        plot_quantization_error(x, x.T)
    with pytest.raises(ValueError, match="bins"):
        plot_quantization_error(x, x, bins=0)


def test_plot_positional_encoding():
    position = torch.arange(32)[:, None]
    freq = 10000 ** (-torch.arange(0, 16, 2) / 16)
    pe = torch.cat([torch.sin(position * freq), torch.cos(position * freq)], dim=1)  # (32, 16)
    fig = plot_positional_encoding(pe)
    assert len(fig.axes) == 2  # heatmap + colorbar
    ax = fig.axes[0]
    assert np.allclose(ax.images[0].get_array(), pe.numpy())
    assert ax.get_xlabel() == "embedding dimension" and ax.get_ylabel() == "position"
    render(fig)
    with pytest.raises(ValueError, match=r"pe must have shape \(T, D\)"):
        plot_positional_encoding(pe[0])


def test_plot_accuracy_vs_shots():
    shots = [0, 1, 2, 4, 8]
    accuracy = np.array([0.22, 0.90, 0.985, 1.0, 1.0])
    fig = plot_accuracy_vs_shots(shots, accuracy, chance=0.05)
    (ax,) = fig.axes
    line = ax.lines[0]
    assert list(line.get_xdata()) == shots and np.allclose(line.get_ydata(), accuracy)
    assert line.get_marker() == "o"
    assert ax.get_ylim() == (0.0, 1.0)
    assert legend_texts(ax) == ["accuracy", "chance"]
    assert "shots" in ax.get_xlabel() and ax.get_ylabel() == "accuracy"
    render(fig)

    fig = plot_accuracy_vs_shots(torch.tensor(shots), {"small": accuracy * 0.5, "large": accuracy})
    assert legend_texts(fig.axes[0]) == ["small", "large"]
    render(fig)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plot_accuracy_vs_shots(shots, accuracy * 2)
    with pytest.raises(ValueError, match="one value per shot"):
        plot_accuracy_vs_shots(shots, accuracy[:3])


def test_figures_do_not_leak_into_pyplot():
    before = plt.get_fignums()
    render(plot_attention(np.eye(3), list("abc")))
    render(plot_accuracy_vs_shots([0, 1], [0.5, 1.0]))
    assert plt.get_fignums() == before  # nothing left open for plt.show() to pop up


def test_plot_recall_race_draws_each_model_and_chance():
    results = {
        "lstm": {"accuracy": 0.2, "params": 1000, "loss_curve": {"time": [1.0, 2.0], "loss": [3.0, 2.9]}},
        "transformer": {"accuracy": 1.0, "params": 200, "loss_curve": {"time": [1.0, 2.0, 3.0], "loss": [3.0, 1.0, 0.1]}},
    }
    fig = plot_recall_race(results, chance=0.25)
    ax_loss, ax_acc = fig.axes
    lines = [ln for ln in ax_loss.get_lines() if ln.get_linestyle() != ":"]
    assert [list(ln.get_ydata()) for ln in lines] == [[3.0, 2.9], [3.0, 1.0, 0.1]]
    chance_line = [ln for ln in ax_loss.get_lines() if ln.get_linestyle() == ":"][0]
    assert np.allclose(chance_line.get_ydata(), np.log(4))
    assert [p.get_height() for p in ax_acc.patches] == [20.0, 100.0]
    assert "transformer (200 parameters)" in legend_texts(ax_loss)
    render(fig)
    with pytest.raises(ValueError, match=r"chance must be a number in \(0, 1\), got 0"):
        plot_recall_race(results, chance=0)
    with pytest.raises(ValueError, match="results\\['lstm'\\] must hold"):
        plot_recall_race({"lstm": {"accuracy": 0.1}}, chance=0.5)


def test_plot_recall_race_plots_against_updates_and_reports_seconds():
    results = {
        "lstm": {"accuracy": 0.2, "params": 10, "seconds": 41.6,
                 "loss_curve": {"step": [10, 20], "time": [4.0, 8.0], "loss": [3.0, 2.9]}},
        "transformer": {"accuracy": 1.0, "params": 20, "seconds": 9.2,
                        "loss_curve": {"step": [10, 20], "time": [1.0, 2.0], "loss": [3.0, 0.1]}},
    }
    fig = plot_recall_race(results, chance=0.25)  # every curve has steps: the x-axis is updates
    ax_loss = fig.axes[0]
    solid = [ln for ln in ax_loss.get_lines() if ln.get_linestyle() == "-"]
    assert [list(ln.get_xdata()) for ln in solid] == [[10, 20], [10, 20]]
    assert ax_loss.get_xlabel() == "optimizer updates"
    assert "lstm (10 parameters, 42 s)" in legend_texts(ax_loss)
    assert "transformer (20 parameters, 9 s)" in legend_texts(ax_loss)
    render(fig)
    by_time = plot_recall_race(results, chance=0.25, x="time").axes[0]
    assert [list(ln.get_xdata()) for ln in by_time.get_lines() if ln.get_linestyle() == "-"][0] == [4.0, 8.0]
    assert by_time.get_xlabel() == "training time (s)"
    with pytest.raises(ValueError, match="x must be one of"):
        plot_recall_race(results, chance=0.25, x="seconds")
    no_steps = {"a": {"accuracy": 0.5, "params": 1, "loss_curve": {"time": [1.0], "loss": [0.5]}}}
    with pytest.raises(ValueError, match=r"x='step' needs loss_curve\['step'\] in every result"):
        plot_recall_race(no_steps, chance=0.25, x="step")


def test_plot_recall_race_baselines_clipped_loss_axis_and_long_names():
    results = {
        "lstm": {"accuracy": 0.2, "params": 10, "loss_curve": {"time": [1.0, 2.0], "loss": [3.5, 3.4]}},
        "transformer, GPT-2 init": {"accuracy": 0.9, "params": 20,
                                    "loss_curve": {"time": [1.0, 2.0, 3.0], "loss": [30.0, 2.0, 0.1]}},
    }
    fig = plot_recall_race(results, chance=1 / 32, baselines={"guess among the values present": 1 / 8})
    ax_loss, ax_acc = fig.axes
    dashed = [ln for ln in ax_loss.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), np.log(8))
    assert any(np.allclose(ln.get_ydata(), 12.5) for ln in ax_acc.get_lines() if ln.get_linestyle() == "--")
    assert ax_loss.get_ylim() == pytest.approx((0.0, 2 * np.log(32)))  # the first loss of 30 is off the axis
    assert [t.get_text() for t in ax_acc.get_xticklabels()] == ["lstm", "transformer,\nGPT-2 init"]
    assert "guess among the values present" in legend_texts(ax_acc)
    render(fig)
    small = plot_recall_race({"a": {"accuracy": 1.0, "params": 1, "loss_curve": {"time": [1.0], "loss": [0.5]}}},
                             chance=0.5)
    assert small.axes[0].get_ylim() == pytest.approx((0.0, 1.05 * np.log(2)))  # the guessing line stays visible
    with pytest.raises(ValueError, match=r"baselines\['present'\] must be a number in \(0, 1\), got 2"):
        plot_recall_race(results, chance=0.5, baselines={"present": 2})
