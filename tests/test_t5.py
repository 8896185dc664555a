"""T5 and FLAN-T5 in the course's `EncoderDecoderLM`: same weights, same logits and
the same greedy output as `transformers.T5ForConditionalGeneration`.

Tiny random configs only (nothing downloaded). Both feed-forward kinds (T5's
ReLU, the gated GELU of T5 v1.1 and FLAN-T5), a tied head with T5's output
scaling and an untied one, a head width apart from the model width (`d_kv`),
and one test per conversion detail showing that getting it wrong breaks the match.
"""

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention

from course_utils.attention import relative_position_bucket
from course_utils.transformer import EncoderDecoderLM, TransformerConfig

TOL = 1e-4
V = 97


def tiny_t5(feed_forward="relu", tied=True, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, d_model=64, d_kv=12, d_ff=96, num_layers=2, num_decoder_layers=2, num_heads=4,
               relative_attention_num_buckets=8, relative_attention_max_distance=20,
               feed_forward_proj=feed_forward, tie_word_embeddings=tied, pad_token_id=0, eos_token_id=1,
               decoder_start_token_id=0)
    cfg.update(kw)
    model = T5ForConditionalGeneration(T5Config(**cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.uniform_(0.5, 1.5)  # random gains, so that copying them matters
    return model


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (3, 30), generator=g)
    mask = torch.ones(3, 30, dtype=torch.long)
    mask[1, 18:] = 0
    mask[2, 25:] = 0
    dec = torch.randint(2, V, (3, 22), generator=g)
    return ids, mask, dec


def max_diff(hf, ours, ids, mask, dec):
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        b = ours(ids, decoder_input_ids=dec, attention_mask=mask)[0]
    return (a - b).abs().max().item()


CASES = {
    "T5: ReLU, tied and scaled head": dict(feed_forward="relu", tied=True),
    "FLAN-T5: gated GELU, unscaled head": dict(feed_forward="gated-gelu", tied=False),
    "deeper decoder, more buckets": dict(feed_forward="gated-gelu", tied=False, num_decoder_layers=3,
                                         relative_attention_num_buckets=16, relative_attention_max_distance=40),
}


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_with_and_without_padding(name):
    hf = tiny_t5(**CASES[name])
    ours = EncoderDecoderLM.from_hf(hf).eval()
    c = ours.config
    assert (c.norm, c.position, c.bias, c.scale_scores, c.head_dim) == ("rmsnorm", "relative", False, False, 12)
    assert c.mlp == ("gated" if "gated" in CASES[name]["feed_forward"] else "plain")
    ids, mask, dec = batch()
    assert max_diff(hf, ours, ids, None, dec) <= TOL
    assert max_diff(hf, ours, ids, mask, dec) <= TOL


@pytest.mark.parametrize("name", list(CASES)[:2])
def test_greedy_generation_matches_hf_generate(name):
    hf = tiny_t5(**CASES[name], seed=3)
    ours = EncoderDecoderLM.from_hf(hf)
    ids, mask, _ = batch(seed=4)
    ref = hf.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=False, eos_token_id=None)
    got = ours.generate(ids, 15, attention_mask=mask)
    assert got.tolist() == ref.tolist()


def test_cached_and_uncached_decoding_agree():
    ours = EncoderDecoderLM.from_hf(tiny_t5("gated-gelu", tied=False, seed=5))
    ids, mask, _ = batch(seed=6)
    assert torch.equal(ours.generate(ids, 20, attention_mask=mask),
                       ours.generate(ids, 20, attention_mask=mask, use_cache=False))


def test_relative_buckets_match_t5():
    rel = torch.arange(-300, 301)[None, :] + torch.zeros(1, 1, dtype=torch.long)
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20), (16, 40)):
            ref = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=buckets,
                                                        max_distance=distance)
            got = relative_position_bucket(rel, bidirectional, buckets, distance)
            assert torch.equal(got, ref), (bidirectional, buckets, distance)


def test_the_course_default_is_unchanged():
    """The book's encoder-decoder keeps learned positions and LayerNorm (one kind of block)."""
    model = EncoderDecoderLM(TransformerConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    assert hasattr(model, "enc_wpe") and not hasattr(model, "enc_rel")
    assert isinstance(model.ln_f, torch.nn.LayerNorm)


# ----------------------------------------------------------------------------- each detail matters


def test_parity_detects_scaled_scores():
    hf = tiny_t5()
    ours = EncoderDecoderLM.from_hf(hf).eval()
    ids, mask, dec = batch()
    for module in ours.modules():
        if hasattr(module, "scale") and hasattr(module, "head_dim"):
            module.scale = None  # back to 1 / sqrt(head width)
    assert max_diff(hf, ours, ids, mask, dec) > TOL


def test_parity_detects_a_missing_head_scale():
    hf = tiny_t5("relu", tied=True)
    ours = EncoderDecoderLM.from_hf(hf).eval()
    ids, mask, dec = batch()
    ours.config.scale_head_input = False
    assert max_diff(hf, ours, ids, mask, dec) > TOL


def test_parity_detects_a_bidirectional_decoder_bias():
    hf = tiny_t5("gated-gelu", tied=False)
    ours = EncoderDecoderLM.from_hf(hf).eval()
    ids, mask, dec = batch()
    ours.dec_rel.bidirectional = True
    assert max_diff(hf, ours, ids, mask, dec) > TOL


def test_parity_detects_swapped_gate():
    hf = tiny_t5("gated-gelu", tied=False)
    ours = EncoderDecoderLM.from_hf(hf).eval()
    ids, mask, dec = batch()
    with torch.no_grad():
        for block in [*ours.encoder, *ours.decoder]:
            g = block.mlp.c_gate.weight.clone()
            block.mlp.c_gate.weight.copy_(block.mlp.c_fc.weight)
            block.mlp.c_fc.weight.copy_(g)
    assert max_diff(hf, ours, ids, mask, dec) > TOL


def test_unsupported_checkpoints_are_refused():
    hf = tiny_t5()
    hf.config.decoder_start_token_id = 5
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        EncoderDecoderLM.from_hf(hf)
