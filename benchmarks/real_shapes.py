"""Speed at real sizes: GPT-2-124M-shaped and SmolLM2-135M-shaped decoders, ours vs `transformers`.

Random weights (nothing downloaded), fp32 on the CPU, the same weights on both
sides (``DecoderOnlyLM.from_hf``). Two measurements per model, alternating
between the libraries in one process:

* cached greedy decoding at batch 1 (a 16-token prompt, ``NEW`` new tokens):
  tokens per second, and that rate as a share of the bound set by reading the
  weights once per token (weight bytes against the copy bandwidth of a large
  tensor measured in the same run: ``bytes copied / s``, each byte read once);
* one training step (forward, backward, AdamW) on a batch of 4 x 128 tokens.

    python benchmarks/real_shapes.py          # about 8 minutes on 2 cores

Result: benchmarks/results/real_shapes.md.
"""

from __future__ import annotations

import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging

from common import alternate_rounds, save, table
from course_utils.transformer import DecoderOnlyLM

NEW = 32  # new tokens per decoding run
PROMPT = 16
ROUNDS = {"decoding": 9, "training": 7}  # rounds of (ours, transformers); each round's pair runs back to back


def speed(name: str, fns: dict, rounds: int) -> tuple[dict[str, float], str]:
    """Median seconds of ``fns["ours"]`` and ``fns["hf"]`` over ``rounds`` alternating rounds, and the
    speed-up as "median (lowest to highest of the rounds)": a round's ratio compares two runs made
    back to back, so the range shows how much the load moved it."""
    times = alternate_rounds(fns, repeats=rounds, warmup=1)
    ratios = sorted(h / o for h, o in zip(times["hf"], times["ours"]))
    print(f"  {name}: speed-up per round " + ", ".join(f"{r:.2f}" for r in ratios), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return med, f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f} to {ratios[-1]:.2f})"


def gpt2_124m() -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config())  # the defaults are GPT-2 small: 12 x 768, 50,257 tokens, 1,024 positions


def smollm2_135m() -> LlamaForCausalLM:
    """SmolLM2-135M's published shape: 30 blocks of width 576, 9 query and 3 key/value heads, SwiGLU 1536."""
    kw = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
              num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5,
              tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    if hasattr(LlamaConfig(), "rope_parameters"):
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": 100000.0}
    else:
        kw["rope_theta"] = 100000.0
    return LlamaForCausalLM(LlamaConfig(**kw))


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second of ``dst.copy_(src)`` on a tensor far larger than the caches (best of ``repeats``)."""
    src = torch.empty(megabytes * 2**20 // 4)
    src.normal_()
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return src.numel() * 4 / best


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters, each tensor once (tied weights are read once per token)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def measure(name: str, hf, bandwidth: float) -> list[list[object]]:
    hf = hf.eval()
    ours = DecoderOnlyLM.from_hf(hf).eval()
    prompt = torch.randint(0, hf.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(prompt)
    ref = hf.generate(prompt, attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0,
                      eos_token_id=None)
    assert ref.tolist() == ours.generate(prompt, NEW).tolist(), "the two decoders disagree"

    def ours_decode():
        ours.generate(prompt, NEW)

    def hf_decode():
        hf.generate(prompt, attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0,
                    eos_token_id=None)

    t, ratio = speed("decoding", {"ours": ours_decode, "hf": hf_decode}, ROUNDS["decoding"])
    wbytes = weight_bytes(ours)
    bound = bandwidth / wbytes  # tokens/s if each token only read every weight once
    rows = [[f"{name}: cached greedy decoding, batch 1", "tokens/s", NEW / t["ours"], NEW / t["hf"], ratio,
             f"ours {NEW / t['ours'] / bound:.0%}, transformers {NEW / t['hf'] / bound:.0%} of {bound:.1f} tokens/s"]]

    batch = torch.randint(0, hf.config.vocab_size, (4, 128), generator=torch.Generator().manual_seed(1))
    ours.train()
    hf.train()
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-5)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-5)

    def ours_step():
        opt_ours.zero_grad(set_to_none=True)
        ours(batch, labels=batch)[1].backward()
        opt_ours.step()

    def hf_step():
        opt_hf.zero_grad(set_to_none=True)
        hf(batch, labels=batch).loss.backward()
        opt_hf.step()

    t, ratio = speed("training", {"ours": ours_step, "hf": hf_step}, ROUNDS["training"])
    rows.append([f"{name}: training step, 4 x 128 tokens", "tokens/s", 512 / t["ours"], 512 / t["hf"], ratio, ""])
    return rows


def main() -> None:
    logging.set_verbosity_error()
    torch.manual_seed(0)
    bandwidth = copy_bandwidth()
    rows = []
    for name, build in (("GPT-2 124M", gpt2_124m), ("SmolLM2 135M", smollm2_135m)):
        model = build()
        print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
              f"{weight_bytes(model) / 2**20:.0f} MiB of weights", flush=True)
        rows += measure(name, model, bandwidth)
    body = table(["model and measurement", "unit", "ours", "transformers", "speed-up", "share of the weight-read bound"],
                 rows)
    body += ("\n\nSpeed-up: the median of the rounds' ratios (transformers' seconds over ours, the two run back to"
             " back), with the lowest and highest round in brackets; tokens/s are medians.")
    body += (f"\n\nCopy bandwidth measured in this run: {bandwidth / 1e9:.1f} GB/s (a 256 MiB fp32 copy, best of 5)."
             f" The bound is that bandwidth divided by the weight bytes: the decoding rate if each token cost only"
             f" one read of every weight. Greedy outputs of the two decoders were checked equal first.")
    save("real_shapes", f"Real shapes: GPT-2 124M and SmolLM2 135M, random weights, fp32 CPU ({NEW} new tokens)", body)


if __name__ == "__main__":
    main()
