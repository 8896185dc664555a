"""Attention checked against PyTorch's own implementations."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils.attention import (
    KVCache,
    MultiHeadAttention,
    causal_mask,
    make_attention_mask,
    padding_mask,
    scaled_dot_product_attention,
)


def qkv(B=2, H=3, Tq=5, Tk=5, d=8):
    return torch.randn(B, H, Tq, d), torch.randn(B, H, Tk, d), torch.randn(B, H, Tk, d)


def test_explicit_attention_matches_sdpa_without_mask():
    q, k, v = qkv()
    out, w = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))


def test_explicit_attention_matches_sdpa_causal():
    q, k, v = qkv()
    out, w = scaled_dot_product_attention(q, k, v, mask=causal_mask(5))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6, rtol=1e-5)
    assert torch.all(w.triu(diagonal=1) == 0)


def test_explicit_attention_matches_sdpa_padding_and_cross_lengths():
    q, k, v = qkv(Tq=4, Tk=7)
    am = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    mask = padding_mask(am)
    out, w = scaled_dot_product_attention(q, k, v, mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=1e-5)
    assert torch.all(w[0, :, :, 5:] == 0)


def test_explicit_attention_custom_scale():
    q, k, v = qkv()
    out, _ = scaled_dot_product_attention(q, k, v, scale=1.0)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=1.0), atol=1e-6, rtol=1e-5)


def test_causal_mask_bottom_right_alignment():
    m = causal_mask(2, 4)
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_make_attention_mask_never_leaves_an_empty_row():
    am = torch.tensor([[0, 0, 1, 1]])  # left padding
    m = make_attention_mask(4, 4, True, am)
    assert m.shape == (1, 1, 4, 4)
    assert m.any(-1).all()
    assert m[0, 0, 3].tolist() == [False, False, True, True]
    assert make_attention_mask(4, 4, False, torch.ones(2, 4, dtype=torch.long)) is None


@pytest.mark.parametrize("causal", [False, True])
def test_multihead_matches_torch_multiheadattention(causal):
    C, H, B, T = 32, 4, 2, 6
    ours = MultiHeadAttention(C, H).eval()
    ref = nn.MultiheadAttention(C, H, batch_first=True).eval()
    with torch.no_grad():
        ours.c_attn.weight.copy_(ref.in_proj_weight)
        ours.c_attn.bias.copy_(ref.in_proj_bias)
        ours.c_proj.weight.copy_(ref.out_proj.weight)
        ours.c_proj.bias.copy_(ref.out_proj.bias)
    x = torch.randn(B, T, C)
    blocked = ~causal_mask(T) if causal else None  # nn.MultiheadAttention: True = blocked
    y_ref, w_ref = ref(x, x, x, attn_mask=blocked, need_weights=True, average_attn_weights=False)
    y, _ = ours(x, is_causal=causal)
    y2, w = ours(x, is_causal=causal, need_weights=True)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y2, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=1e-4)


def test_cross_attention_matches_torch_with_key_padding():
    C, H, B, T, S = 32, 4, 2, 3, 7
    ours = MultiHeadAttention(C, H, cross=True).eval()
    ref = nn.MultiheadAttention(C, H, batch_first=True).eval()
    with torch.no_grad():
        ours.q_proj.weight.copy_(ref.in_proj_weight[:C])
        ours.q_proj.bias.copy_(ref.in_proj_bias[:C])
        ours.kv_proj.weight.copy_(ref.in_proj_weight[C:])
        ours.kv_proj.bias.copy_(ref.in_proj_bias[C:])
        ours.c_proj.weight.copy_(ref.out_proj.weight)
        ours.c_proj.bias.copy_(ref.out_proj.bias)
    x, ctx = torch.randn(B, T, C), torch.randn(B, S, C)
    am = torch.ones(B, S, dtype=torch.long)
    am[0, 4:] = 0
    y_ref, _ = ref(x, ctx, ctx, key_padding_mask=am == 0)
    y, _ = ours(x, context=ctx, mask=padding_mask(am))
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)


def test_kv_cache_gives_the_same_outputs_as_full_causal_attention():
    C, H, B, T = 16, 2, 2, 6
    mha = MultiHeadAttention(C, H).eval()
    x = torch.randn(B, T, C)
    full, _ = mha(x, is_causal=True)
    cache = KVCache(B, H, 8, C // H)
    first, _ = mha(x[:, :3], is_causal=True, cache=cache)  # prefill
    steps = [mha(x[:, t:t + 1], cache=cache)[0] for t in range(3, T)]  # one token at a time
    torch.testing.assert_close(torch.cat([first] + steps, dim=1), full, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="KV cache holds 8"):
        mha(torch.randn(B, 3, C), cache=cache)


def test_is_causal_combined_with_padding_mask_stays_causal():
    C, H = 16, 2
    mha = MultiHeadAttention(C, H).eval()
    x = torch.randn(1, 4, C)
    ones = padding_mask(torch.ones(1, 4, dtype=torch.long))
    y1, _ = mha(x, is_causal=True, mask=ones)
    y2, _ = mha(x, is_causal=True)
    torch.testing.assert_close(y1, y2)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="n_head must divide n_embd"):
        MultiHeadAttention(30, 4)
    mha = MultiHeadAttention(16, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 16\)"):
        mha(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="dtype torch.bool"):
        mha(torch.randn(2, 5, 16), mask=torch.ones(5, 5))
    with pytest.raises(ValueError, match="broadcast"):
        q, k, v = qkv()
        scaled_dot_product_attention(q, k, v, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="only 0"):
        padding_mask(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="cross-attention needs context"):
        MultiHeadAttention(16, 2, cross=True)(torch.randn(1, 2, 16))
