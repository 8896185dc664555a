"""The course's transformer against Hugging Face `transformers`: same weights, same logits.

Every model here is built from a tiny random config; nothing is downloaded.
"""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from course_utils.transformer import DecoderOnlyLM, EncoderDecoderLM, EncoderOnlyLM, TransformerConfig

TOL = 1e-4  # max |logit difference| allowed in fp32


def tiny_gpt2(seed=0, **kw):
    torch.manual_seed(seed)
    # initializer_range 0.2 (10x GPT-2's) gives O(1) activations, so a wrong detail shows in the logits
    cfg = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=97, n_positions=48, bos_token_id=0, eos_token_id=0,
               initializer_range=0.2)
    cfg.update(kw)
    return GPT2LMHeadModel(GPT2Config(**cfg)).eval()


def tiny_bert(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=96,
               vocab_size=97, max_position_embeddings=48, pad_token_id=0, initializer_range=0.2)
    cfg.update(kw)
    return BertForMaskedLM(BertConfig(**cfg)).eval()


def right_padded(B=4, T=24, V=97, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for b, n in enumerate(torch.randint(T // 3, T + 1, (B,), generator=g).tolist()):
        mask[b, n:] = 0
    mask[0] = 1
    return ids, mask


def max_diff_on_real_tokens(a, b, mask):
    return ((a - b).abs() * mask[..., None]).max().item()


# ----------------------------------------------------------------------------- GPT-2


@pytest.mark.parametrize("seed,kw", [(0, {}), (1, dict(n_layer=3, n_embd=48, n_head=6, n_inner=80)),
                                     (2, dict(activation_function="gelu"))])
def test_gpt2_logits_match(seed, kw):
    hf = tiny_gpt2(seed, **kw)
    ours = DecoderOnlyLM.from_hf(hf).eval()
    ids, mask = right_padded(seed=seed)
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)[0]).abs().max().item() <= TOL
        diff = max_diff_on_real_tokens(hf(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask)[0], mask)
    assert diff <= TOL


def test_gpt2_loss_matches():
    hf = tiny_gpt2()
    ours = DecoderOnlyLM.from_hf(hf)
    ids, _ = right_padded()
    labels = ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        assert abs(hf(ids, labels=labels).loss.item() - ours(ids, labels=labels)[1].item()) < 1e-5


def test_gpt2_parity_detects_a_transposed_weight():
    hf = tiny_gpt2()
    ours = DecoderOnlyLM.from_hf(hf)
    with torch.no_grad():
        w = ours.blocks[0].attn.c_proj.weight
        w.copy_(w.t().clone())
    ids, _ = right_padded()
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)[0]).abs().max().item() > TOL


def test_gpt2_parity_detects_the_wrong_gelu():
    hf = tiny_gpt2()
    ours = DecoderOnlyLM.from_hf(hf)
    for block in ours.blocks:
        block.mlp.act.approximate = "none"  # exact GELU instead of GPT-2's tanh approximation
    ids, _ = right_padded()
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)[0]).abs().max().item() > TOL


def test_greedy_generation_matches_hf_generate():
    hf = tiny_gpt2(3)
    ours = DecoderOnlyLM.from_hf(hf)
    prompt = torch.randint(1, 97, (2, 7), generator=torch.Generator().manual_seed(5))
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False,
                      pad_token_id=0, eos_token_id=None)
    got = ours.generate(prompt, max_new_tokens=20)
    assert got.shape == (2, 27)
    assert got.tolist() == ref.tolist()


def test_cached_and_uncached_decoding_agree():
    ours = DecoderOnlyLM(TransformerConfig(vocab_size=50, block_size=40, n_layer=2, n_head=2, n_embd=32))
    prompt = torch.randint(0, 50, (3, 5))
    assert torch.equal(ours.generate(prompt, 30), ours.generate(prompt, 30, use_cache=False))


def test_generated_ids_can_be_trained_on():
    # generate runs under inference_mode for speed; what it returns must still be an ordinary tensor
    ours = DecoderOnlyLM(TransformerConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    out = ours.generate(torch.randint(0, 50, (2, 4)), 6)
    assert not out.is_inference()
    _, loss = ours(out, labels=out)
    loss.backward()
    assert ours.wte.weight.grad is not None


def test_generation_slides_past_the_context_window():
    ours = DecoderOnlyLM(TransformerConfig(vocab_size=50, block_size=12, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = torch.randint(0, 50, (1, 10))
    out = ours.generate(prompt, 8)
    assert out.shape == (1, 18)
    # the last token was predicted from the last 12 tokens only
    window = out[:, -13:-1]
    assert out[0, -1].item() == ours(window)[0][0, -1].argmax().item()
    assert torch.equal(out, ours.generate(prompt, 8, use_cache=False))


def test_eos_stops_and_pads():
    ours = DecoderOnlyLM(TransformerConfig(vocab_size=20, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = torch.randint(1, 20, (4, 3))
    free = ours.generate(prompt, 10)
    eos = free[0, 3].item()  # the first token the model writes for sequence 0
    out = ours.generate(prompt, 10, eos_token_id=eos)
    assert out[0, 3].item() == eos
    for row in out.tolist():
        if eos in row[3:]:
            after = row[3:][row[3:].index(eos) + 1:]
            assert all(t == ours.config.pad_token_id for t in after)


def test_prompt_longer_than_context_is_rejected():
    ours = DecoderOnlyLM(TransformerConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="block_size=8"):
        ours.generate(torch.zeros(1, 9, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="block_size=8"):
        ours(torch.zeros(1, 9, dtype=torch.long))


def test_tied_embeddings_and_parameter_count_match_gpt2():
    hf = tiny_gpt2()
    ours = DecoderOnlyLM.from_hf(hf)
    assert ours.lm_head.weight is ours.wte.weight
    assert ours.num_parameters() == sum(p.numel() for p in hf.parameters())
    text = ours.summary()
    assert "blocks" in text and f"{ours.num_parameters():,}" in text


def test_attention_maps_are_causal_distributions():
    ours = DecoderOnlyLM(TransformerConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16))
    maps = ours.attention_maps(torch.randint(0, 20, (1, 6)))
    assert len(maps) == 2 and maps[0].shape == (1, 2, 6, 6)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(1, 2, 6))
    assert torch.all(maps[1].triu(diagonal=1) == 0)


# ----------------------------------------------------------------------------- BERT


@pytest.mark.parametrize("seed,kw", [(0, {}), (1, dict(num_hidden_layers=3, hidden_size=48, num_attention_heads=3))])
def test_bert_logits_match(seed, kw):
    hf = tiny_bert(seed, **kw)
    ours = EncoderOnlyLM.from_hf(hf).eval()
    ids, mask = right_padded(seed=seed)
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)[0]).abs().max().item() <= TOL
        diff = max_diff_on_real_tokens(hf(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask)[0], mask)
    assert diff <= TOL


def test_bert_mlm_loss_matches():
    hf = tiny_bert()
    ours = EncoderOnlyLM.from_hf(hf)
    ids, mask = right_padded()
    labels = torch.full_like(ids, -100)
    labels[:, ::4] = ids[:, ::4]
    labels[mask == 0] = -100  # no prediction on padding
    with torch.no_grad():
        a = hf(ids, attention_mask=mask, labels=labels).loss.item()
        b = ours(ids, attention_mask=mask, labels=labels)[1].item()
    assert abs(a - b) < 1e-5


def test_bert_parity_detects_the_wrong_gelu():
    hf = tiny_bert()
    ours = EncoderOnlyLM.from_hf(hf)
    for block in ours.blocks:
        block.mlp.act.approximate = "tanh"
    ids, _ = right_padded()
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)[0]).abs().max().item() > TOL


def test_bert_parity_detects_swapped_query_and_key():
    hf = tiny_bert()
    ours = EncoderOnlyLM.from_hf(hf)
    C = ours.config.n_embd
    with torch.no_grad():
        w = ours.blocks[0].attn.c_attn.weight
        w.copy_(torch.cat([w[C:2 * C], w[:C], w[2 * C:]]).clone())
    ids, _ = right_padded()
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)[0]).abs().max().item() > TOL


def test_bert_padding_does_not_change_real_positions():
    ours = EncoderOnlyLM.from_hf(tiny_bert()).eval()
    ids = torch.randint(1, 97, (1, 10))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        torch.testing.assert_close(ours(padded, attention_mask=mask)[0][:, :10], ours(ids)[0], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- encoder-decoder


def tiny_seq2seq():
    return EncoderDecoderLM(TransformerConfig(vocab_size=40, block_size=24, n_layer=2, n_decoder_layer=1,
                                              n_head=2, n_embd=32)).eval()


def test_encoder_decoder_teacher_forcing_equals_step_by_step():
    model = tiny_seq2seq()
    src, tgt = torch.randint(1, 40, (2, 9)), torch.randint(1, 40, (2, 6))
    logits, loss = model(src, labels=tgt)
    assert logits.shape == (2, 6, 40) and loss.ndim == 0
    dec_in = model.shift_right(tgt)
    assert dec_in[:, 0].tolist() == [0, 0] and torch.equal(dec_in[:, 1:], tgt[:, :-1])
    memory = model.encode(src)
    for t in range(1, 7):  # the decoder is causal: a prefix gives the same logits
        torch.testing.assert_close(model.decode(dec_in[:, :t], memory), logits[:, :t], atol=1e-5, rtol=1e-4)


def test_encoder_decoder_cached_and_uncached_generation_agree():
    model = tiny_seq2seq()
    src = torch.randint(1, 40, (3, 8))
    mask = torch.ones_like(src)
    mask[1, 5:] = 0
    a = model.generate(src, 12, attention_mask=mask)
    b = model.generate(src, 12, attention_mask=mask, use_cache=False)
    assert a.shape == (3, 13) and torch.equal(a, b)


def test_encoder_decoder_source_padding_is_ignored():
    model = tiny_seq2seq()
    src = torch.randint(1, 40, (1, 6))
    padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    tgt = torch.randint(1, 40, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(padded, labels=tgt, attention_mask=mask)[0], model(src, labels=tgt)[0],
                                   atol=1e-5, rtol=1e-4)


def test_encoder_decoder_learns_to_copy():
    torch.manual_seed(0)
    model = tiny_seq2seq().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    src = torch.randint(1, 40, (16, 6))
    for _ in range(150):
        loss = model(src, labels=src)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    assert torch.equal(model.generate(src[:4], 6)[:, 1:], src[:4])


# ----------------------------------------------------------------------------- bad input


def test_config_validation():
    with pytest.raises(ValueError, match="n_head must divide n_embd"):
        TransformerConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="activation"):
        TransformerConfig(activation="swish")
    with pytest.raises(ValueError, match="n_kv_head must divide n_head"):
        TransformerConfig(n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="norm"):
        TransformerConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="even head size"):
        TransformerConfig(n_embd=12, n_head=4, position="rope")
    with pytest.raises(ValueError, match="vocab_size must be an int >= 1, got 0"):
        TransformerConfig(vocab_size=0)
    with pytest.raises(TypeError, match="n_layer must be an int, got float"):  # a wrong type is a TypeError
        TransformerConfig(n_layer=2.0)
    with pytest.raises(ValueError, match=r"pad_token_id must be an int in \[0, 255\]"):
        TransformerConfig(pad_token_id=256)
    with pytest.raises(ValueError, match="unknown TransformerConfig fields"):
        TransformerConfig.from_dict({"n_embed": 4})


def test_forward_rejects_bad_input():
    model = DecoderOnlyLM(TransformerConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match=r"input_ids must have shape \(B, T\)"):
        model(torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"in \[0, 20\)"):
        model(torch.tensor([[1, 25]]))
    with pytest.raises(ValueError, match="labels must have the shape"):
        model(torch.zeros(2, 4, dtype=torch.long), labels=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(2, 4\)"):
        model(torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), -1)
    with pytest.raises(ValueError, match="needs decoder_input_ids or labels"):
        tiny_seq2seq()(torch.zeros(1, 3, dtype=torch.long))


# ----------------------------------------------------------------------------- sampling in generate


def test_sampling_is_reproducible_with_a_generator_and_top_k_1_is_greedy():
    ours = DecoderOnlyLM(TransformerConfig(vocab_size=50, block_size=40, n_layer=1, n_head=2, n_embd=32))
    prompt = torch.randint(0, 50, (2, 4))
    draw = lambda seed, **kw: ours.generate(prompt, 15, do_sample=True, generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(draw(1, temperature=1.5), draw(1, temperature=1.5))
    assert not torch.equal(draw(1, temperature=5.0), draw(2, temperature=5.0))
    assert torch.equal(draw(3, top_k=1), ours.generate(prompt, 15))
    assert torch.equal(draw(4, top_p=1e-9), ours.generate(prompt, 15))  # top-p always keeps the top token


def test_sampled_generation_matches_hf_sampling_with_the_same_filters():
    """With the same weights, the filtered next-token distributions agree, so the
    same uniform draws pick the same tokens: compare one sampled step's distribution."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from course_utils.sampling import filtered_distribution

    hf = tiny_gpt2(4)
    ours = DecoderOnlyLM.from_hf(hf)
    prompt = torch.randint(1, 97, (3, 6))
    with torch.no_grad():
        logits = ours(prompt)[0][:, -1]
        ref_logits = hf(prompt).logits[:, -1]
    procs = LogitsProcessorList([TemperatureLogitsWarper(0.7), TopKLogitsWarper(10), TopPLogitsWarper(0.8)])
    ref = torch.softmax(procs(prompt, ref_logits), dim=-1)
    got = filtered_distribution(logits, temperature=0.7, top_k=10, top_p=0.8)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_invalid_sampling_settings_raise():
    ours = DecoderOnlyLM(TransformerConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="temperature"):
        ours.generate(torch.zeros(1, 2, dtype=torch.long), 2, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        ours.generate(torch.zeros(1, 2, dtype=torch.long), 2, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="top_k"):
        tiny_seq2seq().generate(torch.ones(1, 2, dtype=torch.long), 2, do_sample=True, top_k=0)


def test_encoder_decoder_sampling_is_reproducible():
    model = tiny_seq2seq()
    src = torch.randint(1, 40, (2, 5))
    a = model.generate(src, 8, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(0))
    b = model.generate(src, 8, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert torch.equal(model.generate(src, 8, do_sample=True, top_k=1), model.generate(src, 8))


# ----------------------------------------------------------------------------- initialisation


def _std_by_name(named):
    """{our parameter name: std}; Hugging Face's ``transformer.h.0...`` is our ``blocks.0...``."""
    out = {}
    for name, p in named:
        name = name.removeprefix("transformer.")
        out["blocks." + name[2:] if name.startswith("h.") else name] = p.detach().float().std().item()
    return out


def test_gpt2_init_matches_hf_gpt2_initialisation_parameter_by_parameter():
    from course_utils.transformer import init_weights

    L, C = 3, 128
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=L, n_embd=C, n_head=4, vocab_size=500, n_positions=256,
                                    bos_token_id=0, eos_token_id=0))
    ours = DecoderOnlyLM(TransformerConfig(vocab_size=500, block_size=256, n_layer=L, n_head=4, n_embd=C))
    with torch.no_grad():
        for p in ours.parameters():
            p.fill_(3.0)  # so only a real re-draw passes
    init_weights(ours, "gpt2")
    theirs = _std_by_name(hf.named_parameters())
    mine = _std_by_name(ours.named_parameters())
    assert set(mine) == set(theirs) - {"lm_head.weight"}
    for name, std in mine.items():
        if name.endswith("bias"):
            assert std == theirs[name] == 0.0, name
        elif "ln" in name:  # LayerNorm gains: ones in both
            assert std == theirs[name] == 0.0 and ours.get_parameter(name).eq(1).all(), name
        else:
            assert std == pytest.approx(theirs[name], rel=0.05), name
    assert mine["blocks.0.attn.c_proj.weight"] == pytest.approx(0.02 / (2 * L) ** 0.5, rel=0.05)
    assert ours.lm_head.weight is ours.wte.weight


@pytest.mark.parametrize("cls", [DecoderOnlyLM, EncoderOnlyLM, EncoderDecoderLM])
def test_lecun_init_keeps_unit_variance_through_each_linear_layer(cls):
    from course_utils.transformer import init_weights

    torch.manual_seed(0)
    model = cls(TransformerConfig(vocab_size=300, block_size=64, n_layer=2, n_head=4, n_embd=96))
    assert init_weights(model, "lecun") is model
    assert model.lm_head.weight is model.wte.weight  # the tie survives
    assert model.wte.weight.std().item() == pytest.approx(1.0, rel=0.05)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight is not model.wte.weight]
    assert linears
    for m in linears:
        assert m.bias is None or m.bias.abs().max().item() == 0.0
        inp = torch.randn(4096, m.in_features)
        assert m(inp).var().item() == pytest.approx(1.0, rel=0.15), m  # LeCun: Var(x W^T) = Var(x)
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert m.weight.eq(1).all() and m.bias.eq(0).all()
    # the GPT-2 start is ten times smaller in the embeddings and shrinks the signal in every linear layer
    init_weights(model, "gpt2")
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert linears[0](torch.randn(4096, linears[0].in_features)).var().item() < 0.5


def test_init_weights_is_seeded_and_rejects_bad_input():
    from course_utils.transformer import init_weights

    def fresh(seed):
        model = DecoderOnlyLM(TransformerConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=16))
        torch.manual_seed(seed)
        return init_weights(model, "lecun").state_dict()

    a, b, c = fresh(1), fresh(1), fresh(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["wte.weight"], c["wte.weight"])
    model = DecoderOnlyLM(TransformerConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match=r"scheme must be one of \('gpt2', 'lecun'\), got 'xavier'"):
        init_weights(model, "xavier")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        init_weights({}, "gpt2")
