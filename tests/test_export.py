"""The course's models and tokenizers taken into the Hugging Face ecosystem.

`to_hf()` returns the matching `transformers` model (GPT-2, Llama or Qwen2
layouts for the decoder, BERT for the encoder) with the same logits, and
`generate` of `transformers` then writes our tokens; `save_hf` writes a
tokenizer that `PreTrainedTokenizerFast` loads and that gives our ids. The
shipped reference models run in a `transformers` pipeline. Tiny random
configs and the shipped models only: nothing downloaded.
"""

import pytest
import torch
from transformers import PreTrainedTokenizerFast, pipeline

from course_utils import pretrained
from course_utils.data import ICLTokenizer, prose_text
from course_utils.tokenization import CharTokenizer, WordTokenizer, save_hf
from course_utils.transformer import DecoderOnlyLM, EncoderOnlyLM, TransformerConfig

TOL = 1e-4
LLAMA = dict(position="rope", norm="rmsnorm", mlp="gated", activation="silu", bias=False)
LAYOUTS = {
    "GPT2LMHeadModel": dict(),
    "GPT2LMHeadModel, exact GELU, narrow MLP": dict(activation="gelu", n_inner=80),
    "LlamaForCausalLM": dict(LLAMA, n_kv_head=2, tie_embeddings=False),
    "LlamaForCausalLM, tied": dict(LLAMA, tie_embeddings=True),
    "Qwen2ForCausalLM": dict(LLAMA, n_kv_head=2, qkv_bias=True),
}


def random_decoder(seed=0, **kw):
    torch.manual_seed(seed)
    model = DecoderOnlyLM(TransformerConfig(vocab_size=97, block_size=48, n_layer=2, n_head=4, n_embd=64, **kw))
    with torch.no_grad():  # O(1) activations, random norm gains and biases: every copied tensor matters
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if name.endswith(("weight", "bias")) else 0))
    return model.eval()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_decoder_export_gives_the_same_logits_and_tokens(layout):
    ours = random_decoder(**LAYOUTS[layout])
    hf = ours.to_hf()
    assert type(hf).__name__ == layout.split(",")[0]
    ids = torch.randint(0, 97, (3, 30), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)[0]).abs().max().item() <= TOL
        diff = (hf(ids, attention_mask=mask).logits - ours(ids, attention_mask=mask)[0]).abs() * mask[..., None]
    assert diff.max().item() <= TOL
    prompt = ids[:, :6]
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False,
                      pad_token_id=0, eos_token_id=None)
    assert ref.tolist() == ours.generate(prompt, 20).tolist()
    back = DecoderOnlyLM.from_hf(hf).eval()  # and back again
    with torch.no_grad():
        assert torch.equal(back(ids)[0], ours(ids)[0])


def test_encoder_export_gives_the_same_logits():
    torch.manual_seed(0)
    ours = EncoderOnlyLM(TransformerConfig(vocab_size=97, block_size=48, n_layer=2, n_head=4, n_embd=64,
                                           layer_norm_eps=1e-12)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    hf = ours.to_hf()
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    with torch.no_grad():
        diff = (hf(ids, attention_mask=mask).logits - ours(ids, attention_mask=mask)[0]).abs() * mask[..., None]
        assert diff.max().item() <= TOL
        back = EncoderOnlyLM.from_hf(hf).eval()
        assert (back(ids)[0] - ours(ids)[0]).abs().max().item() <= TOL


def test_layouts_without_a_transformers_class_are_refused():
    with pytest.raises(ValueError, match="neither"):
        random_decoder(position="rope").to_hf()  # rotary positions with LayerNorm and a GELU MLP: no HF class
    with pytest.raises(ValueError, match="BERT layout"):
        EncoderOnlyLM(TransformerConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16,
                                        norm="rmsnorm")).to_hf()


# ----------------------------------------------------------------------------- tokenizers


def _samples():
    text = prose_text()[:60_000]
    return [text[i:i + 600] for i in range(0, len(text), 600)] + [
        "Hello  world's 42!\n\n  tabs\tand ünïcödé 😀 done", "  leading spaces", "trailing  \n", "x"]


TOKENIZERS = {
    "prose (byte-level BPE, special token)": lambda: pretrained.load("prose").tokenizer,
    "facts (words)": lambda: pretrained.load("facts").tokenizer,
    "characters": lambda: CharTokenizer(prose_text()[:3000]),
    "words, lowercased": lambda: WordTokenizer(prose_text()[:30_000], 300, lowercase=True),
}


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_saved_tokenizer_gives_our_ids(name, tmp_path):
    tok = TOKENIZERS[name]()
    hf = PreTrainedTokenizerFast.from_pretrained(save_hf(tok, tmp_path))
    assert len(hf) == tok.vocab_size
    samples = _samples()
    if "BPE" in name:
        samples.append(f"one{list(tok.special_tokens)[0]}two")
    for text in samples:
        ours = tok.encode(text, allowed_special="all") if "BPE" in name else tok.encode(text)
        assert hf(text)["input_ids"] == ours, text[:60]
    if "BPE" in name or name == "characters":  # lossless tokenizers decode back to the same text
        assert hf.decode(hf(samples[0])["input_ids"]) == tok.decode(tok.encode(samples[0]))


def test_saved_icl_tokenizer_adds_bos_like_ours(tmp_path):
    tok = ICLTokenizer()
    hf = PreTrainedTokenizerFast.from_pretrained(save_hf(tok, tmp_path))
    for text in ("a -> b ; c -> d ; e ->", "t -> s"):
        assert hf(text)["input_ids"] == tok.encode(text)
    assert hf.bos_token == "<bos>" and hf.pad_token == "<pad>"


# ----------------------------------------------------------------------------- the shipped models, in a pipeline


@pytest.mark.parametrize("name,prompt", [("facts", "Q: Which planet does Ganymede orbit? A:"),
                                         ("prose", "The list type is"),
                                         ("icl", "a -> b ; c ->")])
def test_reference_model_runs_in_a_transformers_pipeline(name, prompt, tmp_path):
    ref = pretrained.load(name)
    hf_tok = PreTrainedTokenizerFast.from_pretrained(save_hf(ref.tokenizer, tmp_path))
    generator = pipeline("text-generation", model=ref.model.to_hf(), tokenizer=hf_tok, device="cpu")
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    out = generator(prompt, return_tensors=True, **settings)  # the prompt's ids and the generated ones
    ids = torch.tensor([hf_tok(prompt)["input_ids"]])
    assert list(out[0]["generated_token_ids"]) == ref.model.generate(ids, 8)[0].tolist()
    # and as text (how spaces are cleaned up depends on the transformers version: only its presence is checked)
    text = generator(prompt, return_full_text=False, **settings)[0]["generated_text"]
    assert isinstance(text, str) and text.strip()
