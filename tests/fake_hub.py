"""A Hugging Face Hub cache holding tiny random models under real model names.

`transformers` and `huggingface_hub` look a name such as
``"openai-community/gpt2"`` up in the cache folder ``HF_HUB_CACHE`` before the
network; with ``HF_HUB_OFFLINE=1`` they use only the cache. Writing a tiny
model of the same class into that cache, in the cache's own layout
(``models--ORG--NAME/refs/main`` naming a snapshot folder that holds the
files), lets the book's optional "real model" cells run here, unchanged and
offline, in seconds. The tokenizer is the course's own byte-level BPE saved
in the `tokenizers` format (same special token as GPT-2's end of text).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch

from course_utils import pretrained
from course_utils.tokenization import save_hf


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=2048, n_positions=256, n_embd=32, n_layer=2, n_head=2,
                                      bos_token_id=2047, eos_token_id=2047))


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                        tie_word_embeddings=True, bos_token_id=2047, eos_token_id=2047))


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(vocab_size=2048, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                               pad_token_id=0, eos_token_id=2047, decoder_start_token_id=0))


# A chat template in the style of SmolLM2's: each turn between start and end markers, then the assistant's turn.
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# The real model each name stands for, built tiny and random with the same class.
MODELS: dict[str, Callable] = {
    "openai-community/gpt2": _gpt2,
    "HuggingFaceTB/SmolLM2-135M-Instruct": _llama,
    "google/flan-t5-base": _t5,
}


def build(cache: Path, name: str) -> Path:
    """Write the tiny stand-in of ``name`` into the Hub cache folder ``cache``; returns its snapshot folder."""
    if name not in MODELS:
        raise KeyError(f"no tiny stand-in for {name!r}: add one to tests/fake_hub.MODELS")
    torch.manual_seed(0)
    model = MODELS[name]()
    revision = hashlib.sha1(name.encode()).hexdigest()  # any 40-hex commit id
    repo = cache / ("models--" + name.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    model.save_pretrained(snapshot)
    save_hf(pretrained.load("prose").tokenizer, snapshot)
    if name.endswith("-Instruct"):  # an instruct model's tokenizer carries its chat template
        config_file = snapshot / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config["chat_template"] = CHAT_TEMPLATE
        config_file.write_text(json.dumps(config))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot
