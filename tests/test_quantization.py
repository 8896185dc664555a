"""Tests for course_utils.quantization.

References: torch.finfo/iinfo, IEEE 754 and bfloat16 facts, hand-worked
quantization examples, and the size of a real ``torch.save`` file.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils.quantization import (
    SCHEMES,
    QuantizedLinear,
    Table,
    absmax_dequantize,
    absmax_quantize,
    evaluate_quantization,
    model_size_bytes,
    number_formats,
    quantize_model,
    represent,
    zeropoint_dequantize,
    zeropoint_quantize,
)

FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
if hasattr(torch, "float8_e4m3fn"):
    FLOAT_DTYPES["fp8-e4m3fn"] = torch.float8_e4m3fn
if hasattr(torch, "float8_e5m2"):
    FLOAT_DTYPES["fp8-e5m2"] = torch.float8_e5m2


# --------------------------------------------------------------------------- formats


def test_number_formats_equal_finfo_and_known_facts():
    rows = {r.name: r for r in number_formats()}
    assert list(rows) == [*FLOAT_DTYPES, "int8"]
    for name, dtype in FLOAT_DTYPES.items():
        fi = torch.finfo(dtype)
        assert (rows[name].bits, rows[name].max, rows[name].tiny, rows[name].eps) == (
            fi.bits, fi.max, fi.tiny, fi.eps
        )
        # sign + exponent + mantissa fill the word
        assert 1 + rows[name].exponent_bits + rows[name].mantissa_bits == fi.bits
    # IEEE binary16 / bfloat16 / binary32 definitions
    assert rows["fp16"].max == 65504.0
    assert rows["fp16"].eps == 2.0**-10 and rows["fp16"].tiny == 2.0**-14
    assert (rows["fp16"].exponent_bits, rows["fp16"].mantissa_bits) == (5, 10)
    assert rows["bf16"].eps == 2.0**-7
    assert (rows["bf16"].exponent_bits, rows["bf16"].mantissa_bits) == (8, 7)
    assert rows["fp32"].eps == 2.0**-23 and rows["fp32"].tiny == 2.0**-126
    if "fp8-e4m3fn" in rows:  # FP8 formats paper: E4M3 max 448, E5M2 max 57344
        assert rows["fp8-e4m3fn"].max == 448.0
        assert rows["fp8-e5m2"].max == 57344.0
    assert rows["int8"].bits == 8 and rows["int8"].max == torch.iinfo(torch.int8).max == 127


def test_number_formats_markdown_table():
    table = number_formats()
    assert isinstance(table, Table)
    lines = table.to_markdown().splitlines()
    assert lines[0].startswith("| name | bits |")
    assert len(lines) == 2 + len(table)
    assert "65504" in lines[3]  # fp16 row (header, separator, fp32, fp16)
    assert str(table) == table.to_markdown()


def test_represent_hand_worked_values():
    pi = {r.format: r for r in represent(math.pi)}
    # fp16 and bf16 grids near pi: steps of 2**-9 and 2**-6 -> 1608/512 and 201/64
    assert pi["fp16"].stored == 1608 / 512 == 3.140625
    assert pi["bf16"].stored == 201 / 64 == 3.140625
    assert pi["int8"].stored == 3.0
    assert pi["fp16"].abs_error == pytest.approx(math.pi - 3.140625)
    assert pi["fp16"].rel_error == pytest.approx((math.pi - 3.140625) / math.pi)

    big = {r.format: r for r in represent(70000)}
    assert big["fp32"].stored == 70000.0 and big["fp32"].abs_error == 0
    assert big["fp16"].stored == math.inf and "inf" in big["fp16"].note  # > 65504
    # bf16 keeps 8 significant bits: 70000 lies in [2**16, 2**17), step 2**9 = 512
    assert big["bf16"].stored == 137 * 512 == 70144
    assert big["int8"].stored == 127 and "saturated" in big["int8"].note

    tiny = {r.format: r for r in represent(1e-8)}
    assert tiny["fp16"].stored == 0.0 and "underflow" in tiny["fp16"].note  # < 2**-25
    assert tiny["fp16"].rel_error == 1.0
    assert tiny["bf16"].stored == pytest.approx(1e-8, rel=2**-8)  # fp32's range


def test_represent_matches_torch_casts():
    for value in (0.1, -123.456, 3e5, 2.0**-20):
        rows = {r.format: r for r in represent(value)}
        for name, dtype in FLOAT_DTYPES.items():
            expected = torch.tensor(value, dtype=torch.float64).to(dtype).double().item()
            stored = rows[name].stored
            assert stored == expected or (math.isnan(stored) and math.isnan(expected)), (name, value)


def test_represent_rejects_non_numbers():
    with pytest.raises(TypeError, match="value"):
        represent("3.14")
    with pytest.raises(TypeError, match="value"):
        represent(True)


# --------------------------------------------------------------------------- tensors


def test_absmax_hand_example():
    x = torch.tensor([1.2, -0.5, 0.0, 2.54])
    q, scale = absmax_quantize(x)
    # scale = 2.54 / 127 = 0.02; q = round(x / 0.02) = [60, -25, 0, 127]
    assert q.dtype == torch.int8
    assert q.tolist() == [60, -25, 0, 127]
    assert scale.shape == () and scale.item() == pytest.approx(0.02)
    x_hat = absmax_dequantize(q, scale)
    assert torch.allclose(x_hat, torch.tensor([1.2, -0.5, 0.0, 2.54]), atol=1e-6)


def test_absmax_row_and_group_hand_example():
    x = torch.tensor([[1.0, -2.0, 4.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    q, scale = absmax_quantize(x, "row")
    # row 0: 127 * [1, -2, 4, .5] / 4 = [31.75, -63.5, 127, 15.875]; -63.5 rounds to even
    assert q.tolist() == [[32, -64, 127, 16], [0, 0, 0, 0]]
    assert scale.shape == (2, 1)
    assert scale[0, 0].item() == pytest.approx(4 / 127) and scale[1, 0].item() == 0.0
    x_hat = absmax_dequantize(q, scale)
    assert torch.isfinite(x_hat).all() and x_hat[1].eq(0).all()  # all-zero row: no 0/0

    q, scale = absmax_quantize(x, "group", group_size=2)
    # groups [1, -2] (absmax 2) and [4, .5] (absmax 4): [63.5, -127], [127, 15.875]
    assert q[0].tolist() == [64, -127, 127, 16]
    assert scale.shape == (2, 2)
    assert scale[0].tolist() == pytest.approx([2 / 127, 4 / 127])


def test_zeropoint_hand_example():
    x = torch.tensor([-1.0, 0.0, 1.55])
    q, scale, zero_point = zeropoint_quantize(x)
    # scale = 2.55 / 255 = 0.01; zero_point = -round(-1 / 0.01) - 128 = -28
    # q = round(x / 0.01) - 28 = [-128, -28, 127]
    assert q.dtype == torch.int8
    assert scale.item() == pytest.approx(0.01)
    assert zero_point.item() == -28
    assert q.tolist() == [-128, -28, 127]
    x_hat = zeropoint_dequantize(q, scale, zero_point)
    assert torch.allclose(x_hat, x, atol=1e-6)

    # all-positive data: [0, 2.55] still fills the whole int8 range
    q, scale, zero_point = zeropoint_quantize(torch.tensor([0.0, 1.0, 2.55]))
    assert zero_point.item() == -128 and q.tolist() == [-128, -28, 127]


def test_zeropoint_constant_and_zero_blocks():
    x = torch.tensor([[3.0, 3.0], [-2.0, -2.0], [0.0, 0.0]])
    q, scale, zero_point = zeropoint_quantize(x, "row")
    x_hat = zeropoint_dequantize(q, scale, zero_point)
    assert torch.allclose(x_hat, x, atol=1e-6)
    assert torch.isfinite(x_hat).all()


def _expand(scale: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if scale.dim() == 0:
        return scale.expand(shape)
    return scale.repeat_interleave(shape[-1] // scale.shape[-1], dim=-1)


@pytest.mark.parametrize("granularity,group_size", [("tensor", None), ("row", None), ("group", 8)])
def test_round_trip_within_half_a_step(granularity, group_size):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 32, generator=gen)
    x[2] *= 50.0  # one row with a much larger range
    x[3, 5] = 40.0  # an outlier
    expected_shape = {"tensor": (), "row": (6, 1), "group": (6, 4)}[granularity]

    q, scale = absmax_quantize(x, granularity, group_size)
    assert q.dtype == torch.int8 and q.shape == x.shape and scale.shape == expected_shape
    step = _expand(scale, x.shape)
    err = (absmax_dequantize(q, scale) - x).abs()
    assert (err <= step / 2 + 1e-5 * step + 1e-7).all()
    assert q.abs().max() == 127

    q, scale, zero_point = zeropoint_quantize(x, granularity, group_size)
    assert q.dtype == torch.int8 and scale.shape == expected_shape == zero_point.shape
    step = _expand(scale, x.shape)
    err = (zeropoint_dequantize(q, scale, zero_point) - x).abs()
    assert (err <= step / 2 + 1e-5 * step + 1e-7).all()
    assert q.min() == -128 and q.max() >= 126  # the range is used fully


def test_row_granularity_on_3d_and_half_input():
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1)).to(torch.float16)
    q, scale = absmax_quantize(x, "row")
    assert q.dtype == torch.int8 and scale.shape == (2, 3, 1) and scale.dtype == torch.float32
    reference = torch.round(x.float() * 127 / x.float().abs().amax(-1, keepdim=True))
    assert torch.equal(q.float(), reference)


def test_bad_inputs():
    with pytest.raises(TypeError, match="float32"):
        absmax_quantize(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="float32"):
        zeropoint_quantize(torch.tensor([1, 2], dtype=torch.int8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        absmax_quantize([1.0, 2.0])
    with pytest.raises(ValueError, match="group_size must divide"):
        absmax_quantize(torch.randn(4, 10), "group", group_size=3)
    with pytest.raises(ValueError, match="group_size"):
        zeropoint_quantize(torch.randn(4, 10), "group")
    with pytest.raises(ValueError, match="group_size"):
        absmax_quantize(torch.randn(4, 10), "row", group_size=5)
    with pytest.raises(ValueError, match="granularity"):
        absmax_quantize(torch.randn(4), "column")
    with pytest.raises(ValueError, match="finite"):
        absmax_quantize(torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError, match="empty"):
        absmax_quantize(torch.empty(0))
    with pytest.raises(TypeError, match="int8"):
        absmax_dequantize(torch.tensor([1, 2]), torch.tensor(0.1))
    with pytest.raises(ValueError, match="scale"):
        absmax_dequantize(torch.zeros(4, 6, dtype=torch.int8), torch.ones(4, 4))
    with pytest.raises(ValueError, match="zero_point"):
        zeropoint_dequantize(torch.zeros(4, 6, dtype=torch.int8), torch.ones(4, 1), torch.zeros(4))


# --------------------------------------------------------------------------- models


def test_quantized_linear_matches_hand_quantized_weight():
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    x = torch.randn(5, 16)
    w = linear.weight.detach()
    scale = w.abs().amax(dim=1, keepdim=True) / 127  # per output row
    w_hat = torch.round(w / scale) * scale
    layer = QuantizedLinear(linear, "absmax", "row")
    assert layer.weight_q.dtype == torch.int8 and layer.weight_q.shape == (8, 16)
    assert torch.allclose(layer(x), F.linear(x, w_hat, linear.bias), atol=1e-5)
    # and it is close to the float layer, but not identical (it really quantized)
    assert torch.allclose(layer(x), linear(x), atol=0.05)
    assert not torch.equal(layer(x), linear(x))

    zp_layer = QuantizedLinear(linear, "zeropoint", "row")
    lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    s = (hi - lo) / 255
    z = -torch.round(lo / s) - 128
    w_hat = (torch.clamp(torch.round(w / s) + z, -128, 127) - z) * s
    assert torch.allclose(zp_layer(x), F.linear(x, w_hat, linear.bias), atol=1e-5)


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.inner = nn.ModuleList([nn.Linear(d, d), nn.Sequential(nn.GELU(), nn.Linear(d, d))])

    def forward(self, x):
        return self.inner[1](self.inner[0](x))


class _TiedLM(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 32) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.block = _Block(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # GPT-style weight tying

    def forward(self, input_ids, labels=None):
        logits = self.lm_head(self.block(self.wte(input_ids)))
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return logits, loss


def test_quantize_model_recursive_tied_and_original_intact():
    torch.manual_seed(0)
    model = _TiedLM()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_model(model, "int8-absmax-row")

    assert isinstance(q.block.inner[0], QuantizedLinear)
    assert isinstance(q.block.inner[1][1], QuantizedLinear)
    assert type(q.lm_head) is nn.Linear  # tied to wte: kept in float
    assert q.lm_head.weight is q.wte.weight  # and still tied
    assert q.block.inner[0].weight_q.dtype == torch.int8
    # the original model is untouched
    assert type(model.block.inner[0]) is nn.Linear
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    ids = torch.randint(0, 50, (2, 7))
    assert torch.allclose(q(ids)[0], model(ids)[0], atol=0.05)

    state = q.state_dict()
    assert state["block.inner.0.weight_q"].dtype == torch.int8
    assert "block.inner.0.weight" not in state


def test_quantize_course_gpt_keeps_tied_head():
    from course_utils.transformer import DecoderOnlyLM, TransformerConfig

    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = DecoderOnlyLM(config).eval()
    q = quantize_model(model, "int8-absmax-row")
    assert type(q.lm_head) is nn.Linear and q.lm_head.weight is q.wte.weight
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    n_quantized = sum(isinstance(m, QuantizedLinear) for m in q.modules())
    assert n_quantized == n_linear - 1 > 0  # every Linear except the tied head
    ids = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        logits, loss = q(ids, labels=ids)
        ref_logits, ref_loss = model(ids, labels=ids)
    assert torch.allclose(logits, ref_logits, atol=0.05)
    assert abs(loss.item() / ref_loss.item() - 1) < 0.01


def test_model_size_bytes_counts_tied_weights_once():
    model = _TiedLM(vocab=50, d=32)
    # reference: parameters() already skips duplicates
    expected = sum(p.numel() * p.element_size() for p in model.parameters())
    assert model_size_bytes(model) == expected == 4 * (50 * 32 + 2 * (32 * 32 + 32))
    assert model_size_bytes(nn.Linear(10, 10)) == (100 + 10) * 4
    # two Parameter objects over one storage (as torch.save sees it): counted once
    shared = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
    shared[1].weight = nn.Parameter(shared[0].weight.data)
    assert model_size_bytes(shared) == 4 * (16 + 4 + 4)
    m = nn.BatchNorm1d(3)  # buffers count too: running mean/var (fp32) + num_batches (int64)
    assert model_size_bytes(m) == 4 * (3 + 3 + 3 + 3) + 8


def _saved_size(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def test_int8_shrinks_linear_model_about_4x():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.Linear(512, 256))
    fp32_bytes, fp32_file = model_size_bytes(model), _saved_size(model)
    for scheme in ("int8-absmax-tensor", "int8-absmax-row", "int8-zeropoint-row"):
        q = quantize_model(model, scheme)
        assert fp32_bytes / model_size_bytes(q) >= 3.5, scheme
        assert fp32_file / _saved_size(q) >= 3.5, scheme
    half = quantize_model(model, "fp16")
    assert model_size_bytes(half) * 2 == fp32_bytes
    assert all(p.dtype == torch.float16 for p in half.parameters())
    assert all(p.dtype == torch.bfloat16 for p in quantize_model(model, "bf16").parameters())


def test_quantize_model_bad_inputs():
    with pytest.raises(ValueError, match="scheme"):
        quantize_model(nn.Linear(2, 2), "int4")
    with pytest.raises(TypeError, match="model"):
        quantize_model("not a model", "fp16")
    with pytest.raises(TypeError, match="nn.Linear"):
        QuantizedLinear(nn.Conv1d(2, 2, 1))


# --------------------------------------------------------------------------- evaluation


class _MLPLM(nn.Module):
    """Predict the next token from the previous ``context`` tokens."""

    def __init__(self, vocab: int = 16, context: int = 3, d: int = 16, hidden: int = 128) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.fc1 = nn.Linear(context * d, hidden)
        self.fc2 = nn.Linear(hidden, vocab)

    def forward(self, input_ids, labels=None):
        logits = self.fc2(F.gelu(self.fc1(self.emb(input_ids).flatten(1))))  # (B, vocab)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return logits, loss


def _toy_batch(gen: torch.Generator, n: int, vocab: int = 16) -> dict:
    """Next token = (x0 + 2 * x2) mod vocab, replaced by noise 25 % of the time."""
    x = torch.randint(0, vocab, (n, 3), generator=gen)
    y = (x[:, 0] + 2 * x[:, 2]) % vocab
    noise = torch.rand(n, generator=gen) < 0.25
    y = torch.where(noise, torch.randint(0, vocab, (n,), generator=gen), y)
    return {"input_ids": x, "labels": y}


@pytest.fixture
def one_thread():
    """Tiny matmuls run far faster on one thread when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_int8_row_perplexity_within_one_percent_of_fp32(one_thread):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = _MLPLM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        _, loss = model(**_toy_batch(gen, 128))
        opt.zero_grad()
        loss.backward()
        opt.step()
    batches = [_toy_batch(gen, 256) for _ in range(8)]

    with torch.no_grad():  # independent fp32 reference
        ref = math.exp(sum(F.cross_entropy(model(b["input_ids"])[0], b["labels"]).item()
                           for b in batches) / len(batches))
    assert ref < 8.0  # it learned something (uniform guessing would be 16)

    rows = evaluate_quantization(model, iter(batches), progress=False)
    by = {r.scheme: r for r in rows}
    assert [r.scheme for r in rows] == list(SCHEMES)
    assert by["fp32"].perplexity == pytest.approx(ref, rel=1e-6)
    assert by["fp32"].size_ratio == 1.0 and by["fp32"].perplexity_change == 0.0
    row = by["int8-absmax-row"]
    assert abs(row.perplexity / ref - 1) < 0.01
    assert row.perplexity_change == pytest.approx(row.perplexity / ref - 1)
    assert row.perplexity != ref  # quantization changed something
    assert row.size_ratio > 2.5  # embeddings and biases stay fp32 in this tiny model
    assert by["fp16"].size_ratio == pytest.approx(2.0)
    for r in rows:  # half precision either ran or says why not
        assert math.isfinite(r.perplexity) or r.note
    assert "| scheme |" in rows.to_markdown()
    assert model.training  # the caller's model is untouched


def test_evaluate_quantization_bad_inputs():
    model = _MLPLM()
    batch = _toy_batch(torch.Generator().manual_seed(0), 4)
    with pytest.raises(ValueError, match="scheme"):
        evaluate_quantization(model, [batch], schemes=["int3"], progress=False)
    with pytest.raises(ValueError, match="batches"):
        evaluate_quantization(model, [], progress=False)
    with pytest.raises(TypeError, match="batch"):
        evaluate_quantization(model, [(batch["input_ids"], batch["labels"])], progress=False)
    with pytest.raises(ValueError, match="loss"):
        evaluate_quantization(model, [{"input_ids": batch["input_ids"]}], ["fp32"], progress=False)
