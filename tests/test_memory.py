"""Tests for course_utils.memory: hand-checked byte counts, predictions equal to
what a real optimizer step allocates, Hugging Face GPT-2 parameter counts,
the Korthikanti et al. formula, tables, plots and input checks."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from torch import nn  # noqa: E402

from course_utils.memory import (  # noqa: E402
    MemoryBreakdown,
    activation_memory,
    estimate_num_parameters,
    measure_training_memory,
    model_memory,
    training_memory,
)
from course_utils.transformer import DecoderOnlyLM, TransformerConfig  # noqa: E402


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(13, 32), nn.GELU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))


def mse(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


def mlp_batch(dtype=torch.float32):
    return (torch.randn(8, 13, dtype=dtype), torch.randn(8, 5, dtype=dtype))


def count(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), len(params)


# --------------------------------------------------------------------------- hand-checked


def test_model_memory_hand_checked():
    assert model_memory(1e9, "fp32") == 4e9
    assert model_memory(1e9, "bf16") == 2e9
    assert model_memory(1e9, "fp16") == 2e9
    assert model_memory(1e9, "int8") == 1e9
    assert model_memory(1e9, "int4") == 5e8
    assert model_memory(3, "int4") == 2  # two 4-bit weights per byte, rounded up
    assert model_memory(7e9) == 28e9


@pytest.mark.parametrize("name, dtype", [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_model_memory_agrees_with_torch_element_size(name, dtype):
    n = 12_345
    real = torch.empty(n, dtype=dtype)
    assert model_memory(n, name) == model_memory(n, dtype) == real.numel() * real.element_size()


def test_training_memory_1b_params_fp32_rule_of_thumb():
    b = training_memory(1e9)
    assert (b.weights, b.gradients, b.optimizer_states, b.activations) == (4e9, 4e9, 8e9, 8e9)
    assert b.total == 24e9
    assert b.per_param == {"weights": 4, "gradients": 4, "optimizer_states": 8, "activations": 8, "total": 24}
    assert b.total - b.weights == 20e9  # "about 20 extra bytes per parameter"


def test_precisions_and_optimizers_hand_checked():
    n = 10**9
    mixed = training_memory(n, precision="mixed-bf16")
    assert (mixed.weights, mixed.gradients, mixed.optimizer_states) == (6 * n, 2 * n, 8 * n)
    assert mixed.total - mixed.activations == 16 * n  # FACTS: about 16 B/param before activations
    pure = training_memory(n, precision="bf16")
    assert (pure.weights, pure.gradients, pure.optimizer_states) == (2 * n, 2 * n, 4 * n)
    assert training_memory(n, optimizer="sgd").optimizer_states == 0
    assert training_memory(n, optimizer="sgd", momentum=True).optimizer_states == 4 * n
    assert training_memory(n, precision="bf16", optimizer="sgd", momentum=True).optimizer_states == 2 * n
    assert training_memory(n, optimizer="adam8bit").optimizer_states == 2 * n
    assert training_memory(n, optimizer="adam").optimizer_states == 8 * n
    # The per-tensor step counters of torch's Adam/AdamW, when the tensor count is given:
    assert training_memory(n, n_param_tensors=10).optimizer_states == 8 * n + 40
    # 16-bit activations halve the rule of thumb:
    assert mixed.activations == pure.activations == 4 * n


# --------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("n_layer, n_embd, n_head, n_inner", [(2, 64, 4, None), (3, 48, 6, 100), (1, 32, 2, None)])
def test_estimate_num_parameters_matches_hf_gpt2(n_layer, n_embd, n_head, n_inner):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(
        GPT2Config(vocab_size=97, n_positions=40, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_inner=n_inner)
    )
    ours = SimpleNamespace(
        vocab_size=97, block_size=40, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_inner=n_inner
    )
    assert estimate_num_parameters(ours) == hf.num_parameters()


def test_estimate_num_parameters_without_bias_hand_checked():
    # d=4, f=16, V=10, T=8, one layer, no biases (LayerNorm keeps only its weight):
    # wte 40 + wpe 32 + (ln 4 + qkv 48 + proj 16 + ln 4 + up 64 + down 64) + ln_f 4 = 276
    cfg = SimpleNamespace(vocab_size=10, block_size=8, n_layer=1, n_embd=4, n_head=2, bias=False)
    assert estimate_num_parameters(cfg) == 276


@pytest.mark.parametrize("kwargs", [{}, {"bias": False}, {"n_inner": 40}])
def test_estimate_num_parameters_matches_decoder_only_lm(kwargs):
    cfg = TransformerConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, **kwargs)
    assert estimate_num_parameters(cfg) == DecoderOnlyLM(cfg).num_parameters()


# --------------------------------------------------------------------------- predicted == measured


@pytest.mark.parametrize("optimizer, momentum", [("adamw", False), ("adam", False), ("sgd", False), ("sgd", True)])
def test_prediction_equals_real_step_fp32_mlp(optimizer, momentum):
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    measured = measure_training_memory(model, mlp_batch(), optimizer=optimizer, loss_fn=mse, momentum=momentum)
    n, tensors = count(model)
    predicted = training_memory(n, optimizer=optimizer, momentum=momentum, n_param_tensors=tensors)
    assert measured.weights == predicted.weights == 4 * n
    assert measured.gradients == predicted.gradients
    assert measured.optimizer_states == predicted.optimizer_states
    assert measured.activations is None and measured.peak is None  # CPU
    assert measured.total == measured.weights + measured.gradients + measured.optimizer_states
    # lr = 0: the weights are untouched and the gradients cleared again
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_adamw_state_really_is_two_moments_and_a_step_per_tensor():
    # Independent of measure_training_memory: inspect torch's own AdamW after a step.
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mse(model, mlp_batch()).backward()
    opt.step()
    n, tensors = count(model)
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    assert training_memory(n, n_param_tensors=tensors).optimizer_states == state_bytes


def test_prediction_equals_real_step_pure_bf16():
    model = mlp().to(torch.bfloat16)
    measured = measure_training_memory(model, mlp_batch(torch.bfloat16), loss_fn=mse)
    n, tensors = count(model)
    predicted = training_memory(n, precision="bf16", n_param_tensors=tensors)
    assert (measured.weights, measured.gradients, measured.optimizer_states) == (
        predicted.weights,
        predicted.gradients,
        predicted.optimizer_states,
    )


@pytest.mark.parametrize("kwargs", [{}, {"bias": False}, {"n_inner": 24, "n_layer": 3}])
def test_prediction_from_config_equals_real_step_decoder_only_lm(kwargs):
    cfg = TransformerConfig(**{"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16, **kwargs})
    model = DecoderOnlyLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (3, cfg.block_size))
    measured = measure_training_memory(model, {"input_ids": ids, "labels": ids})  # model(**batch)[1]
    predicted = training_memory(cfg, batch_size=3)
    assert measured.n_params == predicted.n_params
    assert (measured.weights, measured.gradients, measured.optimizer_states) == (
        predicted.weights,
        predicted.gradients,
        predicted.optimizer_states,
    )


def test_prediction_from_config_equals_real_step_hf_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=12, n_layer=2, n_embd=32, n_head=4))
    cfg = SimpleNamespace(vocab_size=64, block_size=12, n_layer=2, n_embd=32, n_head=4)
    ids = torch.randint(0, 64, (2, 12))
    measured = measure_training_memory(hf, {"input_ids": ids, "labels": ids}, loss_fn=lambda m, b: m(**b).loss)
    predicted = training_memory(cfg, batch_size=2)
    assert (measured.weights, measured.gradients, measured.optimizer_states) == (
        predicted.weights,
        predicted.gradients,
        predicted.optimizer_states,
    )


# --------------------------------------------------------------------------- activations


def test_korthikanti_formula_hand_checked():
    # L=2 layers, a=2 heads, h=8, V=11; b=3 sequences of s=4 tokens.
    L, a, h, V, b, s = 2, 2, 8, 11, 3, 4
    cfg = SimpleNamespace(n_layer=L, n_head=a, n_embd=h, block_size=16, vocab_size=V)
    per_layer = s * b * h * (34 + 5 * a * s / h)  # the paper's formula, 16-bit
    assert per_layer == 3744
    outside = 5 * s * b * h  # embedding dropout mask, final LN and output-layer inputs
    logits = 4 * s * b * V  # fp32 logits of the cross-entropy
    assert activation_memory(cfg, b, s, precision="bf16") == L * per_layer + outside + logits == 8496
    assert activation_memory(cfg, b, s, precision="mixed-bf16") == 8496
    assert activation_memory(cfg, b, s, precision="fp32") == 2 * (L * per_layer + outside) + logits == 16464
    flash = s * b * h * 34
    assert activation_memory(cfg, b, s, precision="bf16", flash_attention=True) == L * flash + outside + logits
    # seq_len defaults to the context window
    assert activation_memory(cfg, batch_size=b) == activation_memory(cfg, b, 16)
    # an MLP of width f instead of 4h: MLP term 3sbh + 4sbf (= 19sbh at f = 4h)
    wide = SimpleNamespace(**vars(cfg), n_inner=20)
    per_layer_wide = s * b * (11 * h + 3 * h + 4 * 20 + 4 * h) + 5 * a * s * s * b
    assert activation_memory(wide, b, s, precision="bf16") == L * per_layer_wide + outside + logits


def test_training_memory_from_config_uses_formula():
    cfg = TransformerConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)
    b = training_memory(cfg, precision="mixed-bf16", batch_size=4, seq_len=8, flash_attention=True)
    assert b.activations == activation_memory(cfg, 4, 8, "mixed-bf16", flash_attention=True)
    assert b.weights == 6 * estimate_num_parameters(cfg)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: training_memory(1e9, precision="fp8"), r"precision must be one of \('fp32', 'mixed-bf16', 'bf16'\)"),
        (lambda: training_memory(1e9, optimizer="lion"), r"optimizer must be one of \('adamw', 'adam', 'sgd', 'adam8bit'\)"),
        (lambda: training_memory(0), r"n_params must be > 0"),
        (lambda: training_memory(-5), r"n_params must be > 0"),
        (lambda: training_memory(2.5), r"n_params must be a whole number"),
        (lambda: model_memory(0), r"n_params must be > 0"),
        (lambda: model_memory(10, "fp64"), r"dtype must be one of \('fp32', 'fp16', 'bf16', 'int8', 'int4'\)"),
        (lambda: training_memory(1e9, batch_size=4), r"need a config"),
        (lambda: training_memory(1e9, seq_len=128), r"need a config"),
        (lambda: training_memory(1e9, optimizer="adamw", momentum=True), r"momentum=True only applies"),
        (
            lambda: training_memory(SimpleNamespace(n_layer=1, n_head=1, n_embd=4, block_size=8, vocab_size=5), batch_size=0),
            r"batch_size must be an int >= 1, got 0",
        ),
        (
            lambda: training_memory(SimpleNamespace(n_layer=1, n_head=1, n_embd=4, block_size=8, vocab_size=5), batch_size=-2),
            r"batch_size must be an int >= 1, got -2",
        ),
        (
            lambda: activation_memory(SimpleNamespace(n_layer=1, n_head=1, n_embd=4, block_size=8, vocab_size=5), 1, 9),
            r"seq_len must be <= config.block_size = 8, got 9",
        ),
        (lambda: measure_training_memory(mlp(), mlp_batch(), optimizer="adam8bit", loss_fn=mse), r"optimizer must be one of"),
        (lambda: MemoryBreakdown(1, 1, 1, None, 1).to_markdown(unit="GiB"), r"unit must be one of"),
    ],
)
def test_bad_input_raises_value_error_naming_accepted_values(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="config_or_n_params"):
        training_memory("1e9")
    with pytest.raises(TypeError, match=r"lacks \['block_size', 'vocab_size'\]"):
        estimate_num_parameters(SimpleNamespace(n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(TypeError, match="batch must be a dict"):
        measure_training_memory(mlp(), mlp_batch())  # a tuple without loss_fn


# --------------------------------------------------------------------------- table and plot


def test_table_lists_every_component():
    text = str(training_memory(1e9))
    for name in ("weights", "gradients", "optimizer states", "activations", "total"):
        assert name in text
    lines = text.splitlines()
    assert "| weights | 4.00 | 4.00 |" in lines
    assert "| optimizer states | 8.00 | 8.00 |" in lines
    assert "| **total** | 24.00 | 24.00 |" in lines
    assert "| activations | n/a | n/a |" in MemoryBreakdown(4, 4, 8, None, 1).to_markdown()


def test_as_dict():
    d = training_memory(1e9).as_dict()
    assert {k: d[k] for k in ("weights", "gradients", "optimizer_states", "activations", "total")} == {
        "weights": 4e9, "gradients": 4e9, "optimizer_states": 8e9, "activations": 8e9, "total": 24e9,
    }
    assert d["n_params"] == 10**9


def bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_plot_stacks_one_bar_per_component_without_pyplot():
    plt.close("all")
    fig = training_memory(1e9).plot()
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == []  # no pyplot figure was opened (nothing to show)
    FigureCanvasAgg(fig).draw()  # renders
    (ax,) = fig.axes
    rects = bars(ax)
    assert len(rects) == 4
    assert [r.get_height() for r in rects] == pytest.approx([4, 4, 8, 8])  # GB
    assert [r.get_y() for r in rects] == pytest.approx([0, 4, 8, 16])  # stacked
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for label, name in zip(labels, ("weights", "gradients", "optimizer states", "activations")):
        assert label.startswith(name)


def test_plot_on_given_axes_skips_unknown_activations():
    fig = Figure()
    ax = fig.add_subplot()
    measured = measure_training_memory(mlp(), mlp_batch(), loss_fn=mse)
    assert measured.plot(ax=ax) is fig
    assert len(bars(ax)) == 3  # no activations measured on CPU
    assert ax.get_ylabel() == "KB"  # a small model is drawn in a readable unit
