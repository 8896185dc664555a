"""Greedy generation throughput: 256 new tokens from a 32-token prompt.

Compares DecoderOnlyLM.generate with its KV cache, the same without the cache,
and transformers' GPT2LMHeadModel.generate, all with the same weights
(about 5 M parameters), fp32 on the CPU, batch 1.

    python benchmarks/generate.py
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging

from common import alternate, save, table
from course_utils.transformer import DecoderOnlyLM

PROMPT, NEW = 32, 256


def models() -> tuple[GPT2LMHeadModel, DecoderOnlyLM, torch.Tensor, torch.Tensor]:
    """The benchmark's GPT-2 (about 4 M parameters), ours with its weights, a prompt (1, PROMPT) and its mask."""
    logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=4096, n_positions=512, n_embd=256, n_layer=4, n_head=4, bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel(cfg).eval()
    ours = DecoderOnlyLM.from_hf(hf).eval()
    prompt = torch.randint(1, cfg.vocab_size, (1, PROMPT))
    return hf, ours, prompt, torch.ones_like(prompt)


def main() -> None:
    hf, ours, prompt, mask = models()
    outputs = {}

    def run(name, fn):
        def go():
            with torch.no_grad():
                outputs[name] = fn()
        return go

    fns = {
        "ours (cache)": run("ours (cache)", lambda: ours.generate(prompt, NEW)),
        "ours (no cache)": run("ours (no cache)", lambda: ours.generate(prompt, NEW, use_cache=False)),
        "HF generate": run("HF generate", lambda: hf.generate(prompt, attention_mask=mask, max_new_tokens=NEW,
                                                             min_new_tokens=NEW, do_sample=False, pad_token_id=0)),
    }
    t = alternate(fns, repeats=5, warmup=1)
    assert outputs["ours (cache)"].tolist() == outputs["HF generate"].tolist() == outputs["ours (no cache)"].tolist()
    rows = [[name, NEW / sec, f"{t['HF generate'] / sec:.2f}x", f"{t['ours (no cache)'] / sec:.2f}x"]
            for name, sec in t.items()]
    body = table(["run", "new tokens/s", "vs HF generate", "vs ours without cache"], rows)
    body += (f"\n\n{ours.num_parameters() / 1e6:.2f} M parameters, prompt {PROMPT} tokens, {NEW} new tokens, "
             "greedy, batch 1; all three produce identical tokens (checked).")
    save("generate", "Greedy generation, fp32 CPU", body)


if __name__ == "__main__":
    main()
