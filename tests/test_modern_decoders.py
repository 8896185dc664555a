"""Today's decoders in the course's own code: Llama (SmolLM2) and Qwen2 checkpoints
load into `DecoderOnlyLM` and give the logits and the greedy tokens of `transformers`.

Every model is built from a tiny random config (nothing downloaded). Each new
option of `TransformerConfig` (RMSNorm, rotary positions, the gated MLP,
grouped-query attention, an untied head, q/k/v biases) is on in at least one
of them, and the detail tests show that one wrong conversion detail breaks
the match.
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import test_transformer as gpt2_tests
from course_utils.attention import apply_rotary, repeat_kv, rotary_cos_sin
from course_utils.transformer import DecoderOnlyLM, RMSNorm, TransformerConfig

TOL = 1e-4  # max |logit difference| allowed in fp32
V = 97


def tiny(family="llama", seed=0, **kw):
    """A random Llama or Qwen2 with large enough weights that a wrong detail shows in the logits."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2, rms_norm_eps=1e-6,
               tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg.update(kw)
    cls, config = (LlamaForCausalLM, LlamaConfig) if family == "llama" else (Qwen2ForCausalLM, Qwen2Config)
    model = cls(config(**cfg)).eval()
    with torch.no_grad():  # random norm gains and q/k/v biases, so that copying them matters
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.2)
    return model


def right_padded(seed=1):
    """A (4, 40) batch padded on the right: the GPT-2 tests' helper, with longer rows for rotary positions."""
    return gpt2_tests.right_padded(B=4, T=40, V=V, seed=seed)


def max_diff(hf, ours, ids, mask=None):
    with torch.no_grad():
        a = hf(ids, attention_mask=mask).logits
        b = ours(ids, attention_mask=mask)[0]
    m = torch.ones(ids.shape) if mask is None else mask
    return ((a - b).abs() * m[..., None]).max().item()


CASES = {
    "llama, grouped-query, untied": ("llama", {}),
    "llama, multi-head, tied": ("llama", dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "llama, multi-query, theta 500000": ("llama", dict(num_key_value_heads=1, rope_theta=500000.0)),
    "qwen2, grouped-query, q/k/v biases": ("qwen2", {}),
    "qwen2, tied, 3 layers": ("qwen2", dict(num_hidden_layers=3, tie_word_embeddings=True)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_on_padded_and_unpadded_batches(name):
    family, kw = CASES[name]
    kw = dict(kw)
    hf = _with_theta(family, kw.pop("rope_theta"), **kw) if "rope_theta" in kw else tiny(family, **kw)
    ours = DecoderOnlyLM.from_hf(hf).eval()
    c = ours.config
    assert (c.norm, c.position, c.mlp, c.activation) == ("rmsnorm", "rope", "gated", "silu")
    assert c.kv_heads == hf.config.num_key_value_heads
    assert c.tie_embeddings == hf.config.tie_word_embeddings
    assert ours.num_parameters() == sum(p.numel() for p in hf.parameters())
    ids, mask = right_padded()
    assert max_diff(hf, ours, ids) <= TOL
    assert max_diff(hf, ours, ids, mask) <= TOL


def _with_theta(family, theta, **kw):
    """A tiny model whose rotary base is ``theta`` (set the way the installed transformers expects)."""
    cfg_cls = LlamaConfig if family == "llama" else Qwen2Config
    probe = cfg_cls()
    if hasattr(probe, "rope_parameters"):
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    else:
        kw["rope_theta"] = theta
    return tiny(family, **kw)


def test_rope_theta_is_read():
    hf = _with_theta("llama", 500000.0)
    assert DecoderOnlyLM.from_hf(hf).config.rope_theta == 500000.0


def test_the_whole_context_window_matches():
    """Positions up to the last one the config allows (rotary angles far beyond a short prompt's)."""
    hf = tiny("qwen2", max_position_embeddings=48)
    ours = DecoderOnlyLM.from_hf(hf).eval()
    ids = torch.randint(3, V, (2, 48), generator=torch.Generator().manual_seed(3))
    assert max_diff(hf, ours, ids) <= TOL
    with pytest.raises(ValueError, match="context window"):
        ours(torch.randint(3, V, (1, 49)))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_generation_matches_hf_generate(family):
    hf = tiny(family, seed=4)
    ours = DecoderOnlyLM.from_hf(hf)
    prompt = torch.randint(3, V, (2, 7), generator=torch.Generator().manual_seed(5))
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=25, do_sample=False,
                      pad_token_id=0, eos_token_id=None)
    got = ours.generate(prompt, max_new_tokens=25)
    assert got.tolist() == ref.tolist()


def test_cached_and_uncached_decoding_agree_with_grouped_query_rope():
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=50, block_size=40, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                            norm="rmsnorm", position="rope", mlp="gated", activation="silu", bias=False,
                            tie_embeddings=False)
    ours = DecoderOnlyLM(cfg)
    prompt = torch.randint(0, 50, (3, 5))
    assert torch.equal(ours.generate(prompt, 30), ours.generate(prompt, 30, use_cache=False))


def test_kv_cache_holds_only_the_key_value_heads():
    cfg = TransformerConfig(vocab_size=50, block_size=16, n_layer=1, n_head=8, n_kv_head=2, n_embd=32,
                            position="rope")
    caches = DecoderOnlyLM(cfg)._new_caches(1, 3, torch.device("cpu"))
    assert caches[0].k.shape == (3, 2, 16, 4)


# ----------------------------------------------------------------------------- each detail matters


def test_parity_detects_interleaved_rotary_pairs(monkeypatch):
    """Rotating pairs (0, 1), (2, 3), ... instead of (i, i + d/2) breaks the match."""
    import course_utils.attention as attention

    def interleaved(x, cos, sin):
        x1, x2 = x[..., 0::2], x[..., 1::2]
        c, s = cos[..., : x.shape[-1] // 2], sin[..., : x.shape[-1] // 2]
        return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)

    hf = tiny("llama")
    ours = DecoderOnlyLM.from_hf(hf).eval()
    ids, _ = right_padded()
    assert max_diff(hf, ours, ids) <= TOL
    monkeypatch.setattr(attention, "apply_rotary", interleaved)
    assert max_diff(hf, ours, ids) > TOL


def test_parity_detects_tiled_instead_of_grouped_key_value_heads(monkeypatch):
    """Query head h reads key/value head h // group; tiling (h % n_kv) breaks the match."""
    import course_utils.attention as attention

    hf = tiny("llama")
    ours = DecoderOnlyLM.from_hf(hf).eval()
    ids, _ = right_padded()
    monkeypatch.setattr(attention, "repeat_kv", lambda x, n: x.repeat(1, n, 1, 1))
    assert max_diff(hf, ours, ids) > TOL


def test_parity_detects_layernorm_instead_of_rmsnorm(monkeypatch):
    hf = tiny("qwen2")
    ours = DecoderOnlyLM.from_hf(hf).eval()
    ids, _ = right_padded()

    def layer_norm(self, x):
        return self.weight * torch.nn.functional.layer_norm(x, x.shape[-1:], eps=self.eps)

    monkeypatch.setattr(RMSNorm, "forward", layer_norm)
    assert max_diff(hf, ours, ids) > TOL


def test_parity_detects_missing_qkv_biases():
    hf = tiny("qwen2")
    ours = DecoderOnlyLM.from_hf(hf).eval()
    ids, _ = right_padded()
    with torch.no_grad():
        for block in ours.blocks:
            block.attn.c_attn.bias.zero_()
    assert max_diff(hf, ours, ids) > TOL


def test_parity_detects_swapped_gate_and_up_projections():
    hf = tiny("llama")
    ours = DecoderOnlyLM.from_hf(hf).eval()
    ids, _ = right_padded()
    with torch.no_grad():
        for block in ours.blocks:
            g = block.mlp.c_gate.weight.clone()
            block.mlp.c_gate.weight.copy_(block.mlp.c_fc.weight)
            block.mlp.c_fc.weight.copy_(g)
    assert max_diff(hf, ours, ids) > TOL


# ----------------------------------------------------------------------------- the pieces on their own


def test_rmsnorm_matches_torch():
    x = torch.randn(3, 5, 16) * 3 + 1
    ours = RMSNorm(16, eps=1e-6)
    ref = torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ref.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), ref(x))


def test_rotary_keeps_norms_and_makes_scores_depend_on_distance_only():
    cos, sin = rotary_cos_sin(torch.arange(32), 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def rot(x, p):
        return apply_rotary(x, cos[p:p + 1], sin[p:p + 1])

    torch.testing.assert_close(rot(q, 7).norm(), q.norm())
    s1 = (rot(q, 10) * rot(k, 4)).sum()  # distance 6
    s2 = (rot(q, 25) * rot(k, 19)).sum()  # distance 6 again
    s3 = (rot(q, 25) * rot(k, 4)).sum()  # distance 21
    torch.testing.assert_close(s1, s2)
    assert not torch.allclose(s1, s3)


def test_repeat_kv_groups_consecutive_query_heads():
    x = torch.arange(2).float().view(1, 2, 1, 1)  # two key/value heads holding 0 and 1
    assert repeat_kv(x, 3).flatten().tolist() == [0, 0, 0, 1, 1, 1]


def test_unsupported_checkpoints_are_refused():
    hf = tiny("llama", hidden_act="gelu")
    with pytest.raises(ValueError, match="hidden_act"):
        DecoderOnlyLM.from_hf(hf)
